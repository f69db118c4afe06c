//! OCSF class and activity identifiers used by Vigil events.
//!
//! Activities Vigil has that OCSF does not name use `OTHER` (99) with Vigil's
//! own `activity_name`, as OCSF prescribes.

pub const CLASS_FILE_SYSTEM_ACTIVITY: u32 = 1001;
pub const CLASS_PROCESS_ACTIVITY: u32 = 1007;
pub const CLASS_NETWORK_ACTIVITY: u32 = 4001;

pub const OTHER: u32 = 99;

/// Process Activity (1007).
pub mod process {
    pub const LAUNCH: u32 = 1;
    pub const TERMINATE: u32 = 2;
    /// fork/clone without exec: OCSF has no name for it.
    pub const FORK: u32 = super::OTHER;
}

/// File System Activity (1001).
pub mod file {
    pub const DELETE: u32 = 4;
    pub const RENAME: u32 = 5;
    pub const OPEN: u32 = 14;
    /// Close with the bytes read and written while open.
    pub const CLOSE: u32 = super::OTHER;
}

/// Network Activity (4001).
pub mod network {
    pub const OPEN: u32 = 1;
    pub const CLOSE: u32 = 2;
    pub const FAIL: u32 = 4;
    pub const TRAFFIC: u32 = 6;
    pub const LISTEN: u32 = 7;
}
