//! The backends Ferrostack ships: built-in (vLLM, SGLang, MindIE, VoxBox) and community
//! (llama.cpp, TensorRT-LLM, Kokoro-FastAPI, Text-Embeddings-Inference), embedded as YAML in
//! GPUStack's format under `catalog/`.
//!
//! A built-in backend's versions come from `catalog/images.yaml` (version -> framework -> image):
//! each becomes a version with `built_in_frameworks` and no `image_name`; the image is picked per
//! worker framework by [`Catalog::resolve_image`]. Operators add their own `-custom` versions.

use std::collections::BTreeMap;

use thiserror::Error;

use super::validate::{ValidationError, validate_backend};
use super::yaml::{YamlError, parse_backend_yaml};
use crate::api::backend::{InferenceBackendSpec, VersionConfig};

/// Names no stored backend may take, in any case: the built-ins and GPUStack's virtual `Custom`.
pub const RESERVED_NAMES: &[&str] = &["vLLM", "SGLang", "MindIE", "VoxBox", "Custom"];

/// GPUStack's virtual `Custom` backend: the deployment's own image and run command ("flexible
/// testing mode"). Never stored; built per deployment. No health path: running once started.
pub const CUSTOM: &str = "Custom";

/// The `Custom` backend for a deployment's `image_name` and `run_command`.
pub fn custom_backend(image_name: Option<&str>, run_command: &str) -> InferenceBackendSpec {
    let version = crate::api::backend::VersionConfig {
        image_name: image_name.map(String::from),
        run_command: Some(run_command.to_string()),
        ..Default::default()
    };
    InferenceBackendSpec {
        health_check_path: None,
        default_version: Some("custom".into()),
        backend_source: crate::api::backend::BackendSource::BuiltIn,
        is_built_in: true,
        version_configs: [("custom".to_string(), version)].into(),
        ..InferenceBackendSpec::named(CUSTOM)
    }
}

/// Whether `name` is the virtual `Custom` backend.
pub fn is_custom(name: &str) -> bool {
    name.eq_ignore_ascii_case(CUSTOM)
}

/// Which backend a deployment runs on: the one rule the server (admission, evaluation, scheduler)
/// and the worker share.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackendChoice {
    /// GPUStack's virtual `Custom` backend, built from the deployment's own image and command.
    Custom(Box<InferenceBackendSpec>),
    /// A stored backend, by name (as the API shows it: built-ins with the catalog's versions).
    Stored(String),
}

/// The backend of a deployment named `backend` (or, when none is named, the one [`preselect`]
/// picks for its file and categories).
pub fn choose_backend(
    backend: Option<&str>,
    image_name: Option<&str>,
    run_command: Option<&str>,
    file: Option<&str>,
    categories: &[String],
) -> BackendChoice {
    let gguf = file.is_some_and(|f| f.to_ascii_lowercase().ends_with(".gguf"));
    let name = backend.map(str::trim).filter(|b| !b.is_empty()).unwrap_or_else(|| preselect(gguf, categories));
    if is_custom(name) {
        BackendChoice::Custom(Box::new(custom_backend(image_name, run_command.unwrap_or_default())))
    } else {
        BackendChoice::Stored(name.to_owned())
    }
}

/// GPUStack's pre-selection when a deployment names no backend: a GGUF model → llama.cpp, speech
/// (text-to-speech, speech-to-text) → VoxBox, image → SGLang, anything else → vLLM. The web UI's
/// deploy form applies the same rule (`ui/src/pages/deployments/spec.ts`).
pub fn preselect(gguf: bool, categories: &[String]) -> &'static str {
    let has = |c: &str| categories.iter().any(|x| x.eq_ignore_ascii_case(c));
    if gguf {
        "llama.cpp"
    } else if has("text_to_speech") || has("speech_to_text") {
        "VoxBox"
    } else if has("image") {
        "SGLang"
    } else {
        "vLLM"
    }
}

const BUILT_IN_FILES: &[(&str, &str)] = &[
    ("vllm.yaml", include_str!("catalog/vllm.yaml")),
    ("sglang.yaml", include_str!("catalog/sglang.yaml")),
    ("mindie.yaml", include_str!("catalog/mindie.yaml")),
    ("voxbox.yaml", include_str!("catalog/voxbox.yaml")),
];

const COMMUNITY_FILES: &[(&str, &str)] = &[
    ("llama-cpp.yaml", include_str!("catalog/llama-cpp.yaml")),
    ("tensorrt-llm.yaml", include_str!("catalog/tensorrt-llm.yaml")),
    ("kokoro-fastapi.yaml", include_str!("catalog/kokoro-fastapi.yaml")),
    ("text-embeddings-inference.yaml", include_str!("catalog/text-embeddings-inference.yaml")),
];

const IMAGES: &str = include_str!("catalog/images.yaml");

/// backend -> version -> framework -> image.
type ImageTable = BTreeMap<String, BTreeMap<String, BTreeMap<String, String>>>;

/// A broken embedded catalog (a build defect; the tests load it).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CatalogError {
    #[error("catalog file {file}: {source}")]
    Yaml { file: String, source: YamlError },
    #[error("catalog file images.yaml: {message}")]
    Images { message: String },
    #[error("catalog file images.yaml: no images for built-in backend {backend:?}")]
    NoImages { backend: String },
    #[error("catalog file {file}: {source}")]
    Invalid { file: String, source: ValidationError },
}

/// The embedded backends, parsed and validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Catalog {
    built_in: Vec<InferenceBackendSpec>,
    community: Vec<InferenceBackendSpec>,
    images: ImageTable,
}

impl Catalog {
    /// Parses and validates the embedded files.
    pub fn load() -> Result<Self, CatalogError> {
        let images: ImageTable = serde_saphyr::from_str(IMAGES)
            .map_err(|err| CatalogError::Images { message: err.without_snippet().to_string() })?;
        let built_in = BUILT_IN_FILES
            .iter()
            .map(|(file, text)| {
                let mut spec = parse_file(file, text)?;
                spec.version_configs = catalog_versions(&images, &spec.backend_name)?;
                check_file(file, spec)
            })
            .collect::<Result<_, _>>()?;
        let community = COMMUNITY_FILES
            .iter()
            .map(|(file, text)| check_file(file, parse_file(file, text)?))
            .collect::<Result<_, _>>()?;
        Ok(Self { built_in, community, images })
    }

    /// vLLM, SGLang, MindIE and VoxBox, with their catalog versions.
    pub fn built_in(&self) -> &[InferenceBackendSpec] {
        &self.built_in
    }

    /// The community backends an operator can enable.
    pub fn community(&self) -> &[InferenceBackendSpec] {
        &self.community
    }

    /// A catalog backend by name, regardless of case.
    pub fn find(&self, name: &str) -> Option<&InferenceBackendSpec> {
        self.built_in.iter().chain(&self.community).find(|spec| spec.backend_name.eq_ignore_ascii_case(name))
    }

    /// The catalog image of a built-in backend's version for one framework.
    pub fn image(&self, backend: &str, version: &str, framework: &str) -> Option<&str> {
        self.images.get(backend)?.get(version)?.get(framework).map(String::as_str)
    }

    /// The image to run `version` of `spec` on a worker with `framework`: the version's own
    /// `image_name` when its framework matches, else the catalog's image for that framework.
    pub fn resolve_image(&self, spec: &InferenceBackendSpec, version: &str, framework: &str) -> Option<String> {
        let config = spec.version_configs.get(version)?;
        match (&config.image_name, &config.custom_framework) {
            (Some(image), Some(own)) if own == framework => Some(image.clone()),
            (Some(image), None) => Some(image.clone()),
            _ => self.image(&spec.backend_name, version, framework).map(str::to_owned),
        }
    }

    /// A stored built-in backend with the catalog's versions merged in (the stored row keeps only
    /// the operator's `-custom` versions); other backends are returned unchanged.
    pub fn with_catalog_versions(&self, stored: &InferenceBackendSpec) -> InferenceBackendSpec {
        let mut merged = stored.clone();
        if let Ok(versions) = catalog_versions(&self.images, &stored.backend_name) {
            merged.version_configs.extend(versions);
        }
        merged
    }
}

fn parse_file(file: &str, text: &str) -> Result<InferenceBackendSpec, CatalogError> {
    parse_backend_yaml(text).map_err(|source| CatalogError::Yaml { file: file.to_owned(), source })
}

fn check_file(file: &str, spec: InferenceBackendSpec) -> Result<InferenceBackendSpec, CatalogError> {
    validate_backend(&spec).map_err(|source| CatalogError::Invalid { file: file.to_owned(), source })?;
    Ok(spec)
}

/// The versions of a built-in backend: one per catalog version, listing its frameworks.
fn catalog_versions(images: &ImageTable, backend: &str) -> Result<BTreeMap<String, VersionConfig>, CatalogError> {
    let versions = images.get(backend).ok_or_else(|| CatalogError::NoImages { backend: backend.to_owned() })?;
    Ok(versions
        .iter()
        .map(|(version, frameworks)| {
            let config =
                VersionConfig { built_in_frameworks: frameworks.keys().cloned().collect(), ..VersionConfig::default() };
            (version.clone(), config)
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::backend::{BackendListItem, BackendSource};
    use crate::backends::render::{DeploymentOverrides, RenderContext, render_command};

    fn catalog() -> Catalog {
        Catalog::load().unwrap()
    }

    /// Backend named, model file, categories, backend chosen.
    type PreselectCase<'a> = (Option<&'a str>, Option<&'a str>, &'a [&'a str], &'a str);

    #[test]
    fn one_preselection_rule() {
        let cases: &[PreselectCase<'_>] = &[
            (None, Some("/m/qwen.Q4_K_M.GGUF"), &[], "llama.cpp"),
            (None, Some("/m/qwen.gguf"), &["text_to_speech"], "llama.cpp"),
            (None, None, &["text_to_speech"], "VoxBox"),
            (None, Some("/m/whisper"), &["speech_to_text"], "VoxBox"),
            (None, None, &["image"], "SGLang"),
            (None, None, &["llm"], "vLLM"),
            (None, None, &[], "vLLM"),
            (Some("  "), None, &[], "vLLM"),
            (Some("SGLang"), Some("/m/a.gguf"), &[], "SGLang"),
        ];
        for (backend, file, categories, want) in cases {
            let categories: Vec<String> = categories.iter().map(|c| (*c).to_owned()).collect();
            let got = choose_backend(*backend, None, None, *file, &categories);
            assert_eq!(got, BackendChoice::Stored((*want).to_owned()), "{backend:?} {file:?} {categories:?}");
        }
        let custom = choose_backend(Some("custom"), Some("img:1"), Some("serve --port {{port}}"), None, &[]);
        let BackendChoice::Custom(spec) = custom else { panic!("custom expected") };
        assert_eq!(spec.backend_name, CUSTOM);
        assert_eq!(spec.version_configs["custom"].image_name.as_deref(), Some("img:1"));
    }

    #[test]
    fn loads_and_validates() {
        let catalog = catalog();
        let names: Vec<&str> = catalog.built_in().iter().map(|s| s.backend_name.as_str()).collect();
        assert_eq!(names, ["vLLM", "SGLang", "MindIE", "VoxBox"]);
        for spec in catalog.built_in() {
            assert!(spec.is_built_in, "{}", spec.backend_name);
            assert_eq!(spec.backend_source, BackendSource::BuiltIn);
            assert!(RESERVED_NAMES.contains(&spec.backend_name.as_str()));
            let default = spec.default_version.as_deref().unwrap();
            assert!(spec.version_configs.contains_key(default), "{}", spec.backend_name);
        }
        let community: Vec<&str> = catalog.community().iter().map(|s| s.backend_name.as_str()).collect();
        assert_eq!(community, ["llama.cpp", "TensorRT-LLM", "Kokoro-FastAPI", "Text-Embeddings-Inference"]);
        for spec in catalog.community() {
            assert_eq!(spec.backend_source, BackendSource::Community);
            assert!(!spec.is_built_in);
        }
    }

    #[test]
    fn health_paths_and_formats() {
        let catalog = catalog();
        let cases = [
            ("vLLM", Some("/health")),
            ("SGLang", Some("/health")),
            ("MindIE", Some("/info")),
            ("VoxBox", Some("/v1/models")),
            ("llama.cpp", Some("/v1/models")),
            ("TensorRT-LLM", Some("/health")),
        ];
        for (name, health) in cases {
            let spec = catalog.find(name).unwrap();
            assert_eq!(spec.health_check_path.as_deref(), health, "{name}");
        }
        assert!(catalog.find("VLLM").is_some());
        assert!(catalog.find("nope").is_none());
    }

    #[test]
    fn picks_images_per_framework() {
        let catalog = catalog();
        let vllm = catalog.find("vLLM").unwrap();
        let cases = [
            ("0.11.0", "cuda", Some("vllm/vllm-openai:v0.11.0")),
            ("0.11.0", "cann", Some("quay.io/ascend/vllm-ascend:v0.11.0rc0")),
            ("0.10.2", "cpu", None),
            ("9.9.9", "cuda", None),
        ];
        for (version, framework, image) in cases {
            assert_eq!(catalog.resolve_image(vllm, version, framework).as_deref(), image, "{version}/{framework}");
        }
        assert_eq!(vllm.version_configs["0.11.0"].built_in_frameworks, ["cann", "cpu", "cuda", "rocm"]);
        let mindie = catalog.find("MindIE").unwrap();
        assert_eq!(
            catalog.resolve_image(mindie, "2.1.RC1", "cann").as_deref(),
            Some("ascendhub.huawei.com/public-ascendhub/mindie:2.1.RC1")
        );
        let llama = catalog.find("llama.cpp").unwrap();
        assert_eq!(
            catalog.resolve_image(llama, "cuda", "cuda").as_deref(),
            Some("ghcr.io/ggml-org/llama.cpp:server-cuda")
        );
        assert_eq!(catalog.resolve_image(llama, "cuda", "rocm"), None);
    }

    #[test]
    fn merges_catalog_versions_into_a_stored_built_in() {
        let catalog = catalog();
        let mut stored = catalog.find("vLLM").unwrap().clone();
        stored.version_configs.clear();
        stored.version_configs.insert(
            "0.12.0-custom".to_owned(),
            VersionConfig {
                image_name: Some("vllm/vllm-openai:v0.12.0".to_owned()),
                custom_framework: Some("cuda".to_owned()),
                ..VersionConfig::default()
            },
        );
        let merged = catalog.with_catalog_versions(&stored);
        let versions: Vec<&str> = merged.version_configs.keys().map(String::as_str).collect();
        assert_eq!(versions, ["0.10.2", "0.11.0", "0.12.0-custom"]);
        validate_backend(&merged).unwrap();
        let custom = catalog.community()[0].clone();
        assert_eq!(catalog.with_catalog_versions(&custom), custom);
        let item = BackendListItem::from(&merged);
        assert_eq!(item.versions.len(), 3);
        assert_eq!(item.versions[2].frameworks, ["cuda"]);
    }

    #[test]
    fn llama_cpp_runs_as_a_host_process() {
        let catalog = catalog();
        let llama = catalog.find("llama.cpp").unwrap();
        let ctx = RenderContext {
            model_path: "/m/smollm.gguf",
            model_name: "smollm",
            port: 8081,
            worker_ip: "127.0.0.1",
            gpu_ids: &[],
            data_dir: "/d",
            api_key: "k",
            api_key_file: "/k",
        };
        let overrides = DeploymentOverrides { version: Some("cpu"), ..DeploymentOverrides::default() };
        let rendered = render_command(llama, &overrides, &ctx).unwrap();
        assert_eq!(
            rendered.process_argv(),
            ["llama-server", "-m", "/m/smollm.gguf", "--host", "127.0.0.1", "--port", "8081", "--alias", "smollm"]
        );
    }

    #[test]
    fn every_catalog_backend_renders() {
        let catalog = catalog();
        let ctx = RenderContext {
            model_path: "/m",
            model_name: "m",
            port: 1,
            worker_ip: "127.0.0.1",
            gpu_ids: &[0],
            data_dir: "/d",
            api_key: "k",
            api_key_file: "/k",
        };
        for spec in catalog.built_in().iter().chain(catalog.community()) {
            for version in spec.version_configs.keys() {
                let overrides = DeploymentOverrides { version: Some(version), ..DeploymentOverrides::default() };
                let rendered = render_command(spec, &overrides, &ctx);
                assert!(rendered.is_ok(), "{} {version}: {rendered:?}", spec.backend_name);
            }
        }
    }
}
