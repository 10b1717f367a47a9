//! The backend a deployment runs on, looked up once for admission, evaluation and the scheduler
//! (the worker applies the same rule, `backends::catalog::choose_backend`, over HTTP).

use crate::api::ModelSpec;
use crate::api::backend::InferenceBackendSpec;
use crate::backends::admission::for_display;
use crate::backends::catalog::{BackendChoice, choose_backend};
use crate::db::{Db, DbError};
use crate::server::bootstrap::catalog;

/// Why a deployment's backend could not be found.
#[derive(Debug, thiserror::Error)]
pub enum BackendLookupError {
    #[error("no inference backend named {0:?}")]
    Missing(String),
    #[error(transparent)]
    Db(#[from] DbError),
}

/// The file a deployment's model is, if it names one (GGUF detection for preselection).
pub fn model_file(spec: &ModelSpec) -> Option<&str> {
    spec.local_path.as_deref().or(spec.huggingface_filename.as_deref()).or(spec.model_scope_file_path.as_deref())
}

/// The backend `spec` runs on: its own (virtual `Custom`), or the stored one as the API shows it
/// (built-ins with the catalog's versions merged in). A deployment that names none gets the
/// preselected one.
pub async fn backend_for(db: &Db, spec: &ModelSpec) -> Result<InferenceBackendSpec, BackendLookupError> {
    let choice = choose_backend(
        spec.backend.as_deref(),
        spec.image_name.as_deref(),
        spec.run_command.as_deref(),
        model_file(spec),
        &spec.categories,
    );
    lookup(db, choice).await
}

/// The backend an instance placed by hand runs on: its own image and command (the "Custom"
/// backend), else the stored backend of that name.
pub async fn backend_named(
    db: &Db,
    backend: &str,
    image_name: Option<&str>,
    run_command: Option<&str>,
) -> Result<InferenceBackendSpec, BackendLookupError> {
    lookup(db, choose_backend(Some(backend), image_name, run_command, None, &[])).await
}

async fn lookup(db: &Db, choice: BackendChoice) -> Result<InferenceBackendSpec, BackendLookupError> {
    match choice {
        BackendChoice::Custom(backend) => Ok(*backend),
        BackendChoice::Stored(name) => match db.backend_by_name(&name).await {
            Ok(stored) => Ok(match catalog() {
                Ok(catalog) => for_display(catalog, &stored.spec),
                Err(_) => stored.spec,
            }),
            Err(DbError::NotFound { .. }) => Err(BackendLookupError::Missing(name)),
            Err(e) => Err(e.into()),
        },
    }
}
