//! Gantry's end-to-end tests, one module per area, all in one test binary: each module used to
//! be a binary of its own, and linking some forty binaries that each hold kube, sqlx, libgit2
//! and tera took most of the suite's time (docs/development.md).

mod access;
mod api_docs;
mod api_schema;
mod approvals;
mod artifacts;
mod auth;
mod cancel;
mod cli;
mod concurrency;
mod controlplane;
mod crash_safety;
mod dag_order;
mod example_pipelines;
mod failures;
mod gantry_run;
mod git_checkout;
mod images;
mod invalid_pipelines;
mod kube_standin;
mod kubernetes_deploy;
mod kubernetes_jobs;
mod kubernetes_manifests;
mod kubernetes_pipeline;
mod kubernetes_restart;
mod kubernetes_runner_image;
mod local_runs;
mod logs;
mod postgres_restart;
mod replicas;
mod retries;
mod run_context;
mod schedules;
mod step_isolation;
mod timeouts;
mod ui;
mod ui_access;
mod ui_deploy;
mod ui_errors;
mod ui_images;
mod ui_keyboard;
mod ui_members;
mod ui_phone;
mod ui_pipeline_page;
mod webhooks;
