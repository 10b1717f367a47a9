//! Inference backends, the pure part: catalog, YAML, validation rules, command rendering and
//! backend-parameter parsing. No IO, no async: the server, worker and CLI call into this.

pub(crate) mod admission;
pub(crate) mod catalog;
pub(crate) mod config_file;
pub(crate) mod distributed;
#[cfg(test)]
mod fixtures;
pub(crate) mod kind;
pub(crate) mod params;
pub mod render;
pub(crate) mod shell;
pub(crate) mod validate;
pub(crate) mod yaml;

pub use catalog::{Catalog, CatalogError, RESERVED_NAMES};
pub use params::{ParamError, normalize_params, parse_params};
pub use render::{DeploymentOverrides, RenderContext, RenderError, RenderedCommand, render_command, resolve_version};
pub use validate::{ValidationError, check_deletable, check_name_available, check_update, validate_backend};
pub use yaml::{YamlError, parse_backend_yaml, parse_gpustack_backend_yaml, to_backend_yaml};
