//! The container framework: apps that stay running (spec, plan, core, store,
//! App API, `strata serve`).

pub mod api;
pub mod constraints;
pub mod engine;
pub mod plan;
pub mod records;
pub mod serve;
pub mod service;
pub mod spec;
pub mod store;
pub mod ui;
pub mod view;
