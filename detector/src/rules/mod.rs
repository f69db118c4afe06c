//! Detection rules as data: the YAML model ([`model`]), running queries over
//! the window ([`engine`]), examples as events ([`examples`]), and the
//! checks behind `vigil rules check|test` ([`check`]).

pub mod check;
pub mod engine;
pub mod examples;
pub mod live;
pub mod model;
pub mod regex;
