//! Inference backends, the pure part: catalog, YAML, validation rules, command rendering and
//! backend-parameter parsing. No IO, no async: the server, worker and CLI call into this.

pub mod admission;
pub mod catalog;
pub mod config_file;
pub mod distributed;
#[cfg(test)]
mod fixtures;
pub mod kind;
pub mod params;
pub mod render;
pub mod shell;
pub mod validate;
pub mod yaml;

pub use catalog::{Catalog, CatalogError, RESERVED_NAMES};
pub use params::{ParamError, normalize_params, parse_params};
pub use render::{DeploymentOverrides, RenderContext, RenderError, RenderedCommand, render_command, resolve_version};
pub use validate::{ValidationError, check_deletable, check_name_available, check_update, validate_backend};
pub use yaml::{YamlError, parse_backend_yaml, parse_gpustack_backend_yaml, to_backend_yaml};
