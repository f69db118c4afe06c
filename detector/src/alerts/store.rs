//! The alert store: Parquet files under `<data_dir>/alerts/day=YYYY-MM-DD/`
//! (the day of the alert's event time, UTC), one file per write, each
//! written to a temporary name, synced and renamed: a file is either whole
//! or absent, and once [`AlertStore::write`] returns the alerts survive a
//! crash. Any SQL engine reads the directory as one table.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;

use super::{from_batch, to_batch, Alert};

pub struct AlertStore {
    dir: PathBuf,
    written: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("alert store {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("alert file {path}: {message}")]
    Parquet { path: PathBuf, message: String },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl AlertStore {
    /// The store under `data_dir/alerts`.
    pub fn open(data_dir: &Path) -> Result<AlertStore, StoreError> {
        let dir = data_dir.join("alerts");
        std::fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        Ok(AlertStore { dir, written: 0 })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Write alert versions durably, one file per day they fall on.
    pub fn write(&mut self, alerts: &[Alert], now_wall_ms: i64) -> Result<(), StoreError> {
        let mut days: std::collections::BTreeMap<String, Vec<Alert>> = Default::default();
        for a in alerts {
            days.entry(day_of(a.time)).or_default().push(a.clone());
        }
        for (day, alerts) in days {
            let dir = self.dir.join(format!("day={day}"));
            std::fs::create_dir_all(&dir).map_err(io_err(&dir))?;
            self.written += 1;
            let name = format!(
                "alerts-{now_wall_ms}-{}-{}.parquet",
                std::process::id(),
                self.written
            );
            let tmp = dir.join(format!(".{name}.tmp"));
            let path = dir.join(&name);
            let file = File::create(&tmp).map_err(io_err(&tmp))?;
            let props = WriterProperties::builder()
                .set_compression(Compression::ZSTD(ZstdLevel::default()))
                .build();
            let batch = to_batch(&alerts);
            let perr = |e: parquet::errors::ParquetError| StoreError::Parquet {
                path: tmp.clone(),
                message: e.to_string(),
            };
            let mut w = ArrowWriter::try_new(file, batch.schema(), Some(props)).map_err(perr)?;
            w.write(&batch).map_err(perr)?;
            let file = w.into_inner().map_err(perr)?;
            file.sync_all().map_err(io_err(&tmp))?;
            std::fs::rename(&tmp, &path).map_err(io_err(&path))?;
            File::open(&dir)
                .and_then(|d| d.sync_all())
                .map_err(io_err(&dir))?;
        }
        Ok(())
    }
}

/// Every alert version under `alerts_dir` (a store's `alerts` directory, or
/// a data directory holding one). Unreadable files are reported, not fatal.
pub fn read_all(dir: &Path) -> Result<(Vec<Alert>, Vec<StoreError>), StoreError> {
    let dir = if dir.join("alerts").is_dir() {
        dir.join("alerts")
    } else {
        dir.to_path_buf()
    };
    let mut files = Vec::new();
    if dir.is_dir() {
        for day in std::fs::read_dir(&dir).map_err(io_err(&dir))? {
            let day = day.map_err(io_err(&dir))?.path();
            if !day.is_dir() {
                continue;
            }
            for f in std::fs::read_dir(&day).map_err(io_err(&day))? {
                let f = f.map_err(io_err(&day))?.path();
                if f.extension().is_some_and(|e| e == "parquet")
                    && !f
                        .file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with('.'))
                {
                    files.push(f);
                }
            }
        }
    }
    files.sort();
    let mut alerts = Vec::new();
    let mut errors = Vec::new();
    for f in files {
        match read_file(&f) {
            Ok(a) => alerts.extend(a),
            Err(e) => errors.push(e),
        }
    }
    Ok((alerts, errors))
}

fn read_file(path: &Path) -> Result<Vec<Alert>, StoreError> {
    let perr = |message: String| StoreError::Parquet {
        path: path.to_path_buf(),
        message,
    };
    let file = File::open(path).map_err(io_err(path))?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .and_then(|b| b.build())
        .map_err(|e| perr(e.to_string()))?;
    let mut out = Vec::new();
    for batch in reader {
        let batch = batch.map_err(|e| perr(e.to_string()))?;
        out.extend(from_batch(&batch).map_err(perr)?);
    }
    Ok(out)
}

/// `YYYY-MM-DD` (UTC) of a time in ms since the epoch.
pub fn day_of(ms: i64) -> String {
    // Howard Hinnant's civil_from_days
    let z = ms.div_euclid(86_400_000) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_are_utc_calendar_days() {
        assert_eq!(day_of(0), "1970-01-01");
        assert_eq!(day_of(1_767_225_600_000), "2026-01-01");
        assert_eq!(day_of(1_767_225_599_999), "2025-12-31");
        assert_eq!(day_of(951_782_400_000), "2000-02-29");
    }
}
