//! What `cargo xtask` shares with the tests: serving a built app as a static host should ([`web`]).

pub mod web;
