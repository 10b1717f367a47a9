//! Model downloads on the worker: Hugging Face (honours `HF_ENDPOINT`, `HF_TOKEN`) and ModelScope
//! (`MODELSCOPE_ENDPOINT`, `MODELSCOPE_API_TOKEN`) sources into a shared cache, resuming partial
//! files with HTTP range requests, one download per source however many instances want it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;
use tokio::sync::Mutex;

/// Where a model comes from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum HubSource {
    Huggingface { repo: String, file: Option<String> },
    ModelScope { model: String, file: Option<String> },
}

impl HubSource {
    fn key(&self) -> String {
        match self {
            HubSource::Huggingface { repo, file } => format!("hf:{repo}:{}", file.as_deref().unwrap_or("")),
            HubSource::ModelScope { model, file } => format!("ms:{model}:{}", file.as_deref().unwrap_or("")),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    #[error("{url}: {message}")]
    Http { url: String, message: String },
    #[error("{url}: HTTP {status}{hint}")]
    Status { url: String, status: u16, hint: &'static str },
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(String),
}

/// Endpoints and tokens, from the worker's flags or environment.
#[derive(Debug, Clone)]
pub struct HubConfig {
    pub hf_endpoint: String,
    pub hf_token: Option<String>,
    pub ms_endpoint: String,
    pub ms_token: Option<String>,
}

pub struct Downloader {
    root: PathBuf,
    hub: HubConfig,
    http: reqwest::Client,
    /// One lock per source: a second instance of the same model waits for the first download.
    locks: Mutex<HashMap<String, Arc<Mutex<()>>>>,
}

/// Reports progress in [0, 1] and the bytes written so far (all files of the source together).
pub type Progress = Arc<dyn Fn(f64, u64) + Send + Sync>;

fn io(path: &Path) -> impl Fn(std::io::Error) -> DownloadError + '_ {
    move |source| DownloadError::Io { path: path.display().to_string(), source }
}

/// A repository-relative file name that stays inside its directory.
fn safe_relative(name: &str) -> Result<&str, DownloadError> {
    let ok = crate::api::hub::repo_file_problem(name).is_none()
        && Path::new(name).components().all(|c| matches!(c, std::path::Component::Normal(_)));
    if ok { Ok(name) } else { Err(DownloadError::Invalid(format!("refusing file name {name:?} from the hub"))) }
}

/// `root/hub/id`, for a repository id of the hubs' shape (`owner/name`, `api::hub`) only.
fn repo_dir(root: &Path, hub: &str, id: &str) -> Result<PathBuf, DownloadError> {
    if let Some(why) = crate::api::hub::repo_id_problem(id) {
        return Err(DownloadError::Invalid(format!("refusing repository id {id:?}: {why}")));
    }
    let dir = root.join(hub).join(id);
    inside(root, dir)
}

/// `path`, when it is below `root` by its words alone (every component after `root` a plain name):
/// a path that would leave the cache is an error, never written.
fn inside(root: &Path, path: PathBuf) -> Result<PathBuf, DownloadError> {
    let below = path
        .strip_prefix(root)
        .is_ok_and(|rest| rest.components().all(|c| matches!(c, std::path::Component::Normal(_))));
    if below && path != root {
        Ok(path)
    } else {
        Err(DownloadError::Invalid(format!("refusing {} outside the cache {}", path.display(), root.display())))
    }
}

impl Downloader {
    pub fn new(root: PathBuf, hub: HubConfig) -> Downloader {
        Downloader { root, hub, http: reqwest::Client::new(), locks: Mutex::new(HashMap::new()) }
    }

    /// Makes the source present in the cache and returns the path to load (the file, or the
    /// directory for a whole repository).
    pub async fn ensure(&self, source: &HubSource, progress: Progress) -> Result<PathBuf, DownloadError> {
        let lock = self.locks.lock().await.entry(source.key()).or_default().clone();
        let _guard = lock.lock().await;
        let (dir, files) = match source {
            HubSource::Huggingface { repo, file } => {
                let dir = repo_dir(&self.root, "huggingface", repo)?;
                let files = match file {
                    Some(f) => vec![f.clone()],
                    None => self.hf_files(repo).await?,
                };
                (dir, files)
            }
            HubSource::ModelScope { model, file } => {
                let dir = repo_dir(&self.root, "modelscope", model)?;
                let files = match file {
                    Some(f) => vec![f.clone()],
                    None => self.ms_files(model).await?,
                };
                (dir, files)
            }
        };
        let n = files.len().max(1) as f64;
        let mut bytes_before = 0u64;
        for (i, name) in files.iter().enumerate() {
            let rel = safe_relative(name)?;
            let target = inside(&self.root, dir.join(rel))?;
            if !target.exists() {
                let url = self.file_url(source, rel);
                let done = i as f64;
                let p = progress.clone();
                self.fetch(&url, &target, move |f, written| p((done + f) / n, bytes_before + written)).await?;
            }
            bytes_before += tokio::fs::metadata(&target).await.map(|m| m.len()).unwrap_or(0);
            progress((i + 1) as f64 / n, bytes_before);
        }
        let single = match source {
            HubSource::Huggingface { file, .. } | HubSource::ModelScope { file, .. } => file.as_deref(),
        };
        match single {
            Some(f) => inside(&self.root, dir.join(safe_relative(f)?)),
            None => Ok(dir),
        }
    }

    fn file_url(&self, source: &HubSource, rel: &str) -> String {
        match source {
            HubSource::Huggingface { repo, .. } => {
                format!("{}/{repo}/resolve/main/{rel}", self.hub.hf_endpoint.trim_end_matches('/'))
            }
            HubSource::ModelScope { model, .. } => format!(
                "{}/api/v1/models/{model}/repo?Revision=master&FilePath={rel}",
                self.hub.ms_endpoint.trim_end_matches('/')
            ),
        }
    }

    fn authed(&self, req: reqwest::RequestBuilder, hf: bool) -> reqwest::RequestBuilder {
        let token = if hf { &self.hub.hf_token } else { &self.hub.ms_token };
        match token {
            Some(t) => req.bearer_auth(t),
            None => req,
        }
    }

    async fn get_json(&self, url: &str, hf: bool) -> Result<serde_json::Value, DownloadError> {
        let res = self
            .authed(self.http.get(url), hf)
            .send()
            .await
            .map_err(|e| DownloadError::Http { url: url.into(), message: e.to_string() })?;
        let status = res.status().as_u16();
        if !res.status().is_success() {
            let hint = if status == 401 || status == 403 { " (private or gated: set the token)" } else { "" };
            return Err(DownloadError::Status { url: url.into(), status, hint });
        }
        res.json().await.map_err(|e| DownloadError::Http { url: url.into(), message: e.to_string() })
    }

    async fn hf_files(&self, repo: &str) -> Result<Vec<String>, DownloadError> {
        let url = format!("{}/api/models/{repo}", self.hub.hf_endpoint.trim_end_matches('/'));
        let v = self.get_json(&url, true).await?;
        let files: Vec<String> = v["siblings"]
            .as_array()
            .map(|s| s.iter().filter_map(|f| f["rfilename"].as_str().map(String::from)).collect())
            .unwrap_or_default();
        if files.is_empty() {
            return Err(DownloadError::Invalid(format!("{url}: the repository lists no files")));
        }
        Ok(files)
    }

    async fn ms_files(&self, model: &str) -> Result<Vec<String>, DownloadError> {
        let url = format!(
            "{}/api/v1/models/{model}/repo/files?Revision=master&Recursive=true",
            self.hub.ms_endpoint.trim_end_matches('/')
        );
        let v = self.get_json(&url, false).await?;
        let files: Vec<String> = v["Data"]["Files"]
            .as_array()
            .map(|s| {
                s.iter()
                    .filter(|f| f["Type"].as_str() != Some("tree"))
                    .filter_map(|f| f["Path"].as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default();
        if files.is_empty() {
            return Err(DownloadError::Invalid(format!("{url}: the model lists no files")));
        }
        Ok(files)
    }

    /// Downloads `url` to `target`, resuming `target.part` if an earlier attempt left one.
    async fn fetch(&self, url: &str, target: &Path, progress: impl Fn(f64, u64)) -> Result<(), DownloadError> {
        let part = target.with_extension(match target.extension() {
            Some(ext) => format!("{}.part", ext.to_string_lossy()),
            None => "part".into(),
        });
        if let Some(dir) = target.parent() {
            tokio::fs::create_dir_all(dir).await.map_err(io(dir))?;
        }
        let have = tokio::fs::metadata(&part).await.map(|m| m.len()).unwrap_or(0);
        let mut req = self.authed(self.http.get(url), url.starts_with(&self.hub.hf_endpoint));
        if have > 0 {
            req = req.header(reqwest::header::RANGE, format!("bytes={have}-"));
        }
        let res = req.send().await.map_err(|e| DownloadError::Http { url: url.into(), message: e.to_string() })?;
        let status = res.status().as_u16();
        if !res.status().is_success() {
            let hint = if status == 401 || status == 403 { " (private or gated: set the token)" } else { "" };
            return Err(DownloadError::Status { url: url.into(), status, hint });
        }
        // 206: the server resumed; 200: it sent everything, so start over.
        let resumed = status == 206;
        let mut written = if resumed { have } else { 0 };
        let total = res.content_length().map(|n| n + written);
        let mut file = tokio::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .append(resumed)
            .truncate(!resumed)
            .open(&part)
            .await
            .map_err(io(&part))?;
        let mut body = res.bytes_stream();
        let mut last = 0.0;
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| DownloadError::Http { url: url.into(), message: e.to_string() })?;
            file.write_all(&chunk).await.map_err(io(&part))?;
            written += chunk.len() as u64;
            if let Some(total) = total.filter(|t| *t > 0) {
                let f = written as f64 / total as f64;
                if f - last >= 0.01 {
                    progress(f, written);
                    last = f;
                }
            }
        }
        file.flush().await.map_err(io(&part))?;
        drop(file);
        if let Some(total) = total
            && written != total
        {
            return Err(DownloadError::Http { url: url.into(), message: format!("got {written} of {total} bytes") });
        }
        tokio::fs::rename(&part, target).await.map_err(io(target))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hub_file_names_cannot_escape_the_cache() {
        for ok in ["model.gguf", "sub/dir/config.json"] {
            assert!(safe_relative(ok).is_ok(), "{ok}");
        }
        for bad in ["", "/etc/passwd", "../x", "a/../../b", "./x", "a//b", "a\\..\\b"] {
            assert!(safe_relative(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn repository_directories_stay_in_the_cache() {
        let root = Path::new("/var/cache/ferrostack");
        let cases: &[(&str, Option<&str>)] = &[
            ("Qwen/Qwen2.5-0.5B", Some("/var/cache/ferrostack/huggingface/Qwen/Qwen2.5-0.5B")),
            ("owner/model.v1_2", Some("/var/cache/ferrostack/huggingface/owner/model.v1_2")),
            ("../../../tmp/pwn", None),
            ("../x", None),
            ("/etc/passwd", None),
            ("/etc/x", None),
            ("owner/..", None),
            ("./owner", None),
            ("owner", None),
            ("a/b/c", None),
            ("", None),
        ];
        for (id, want) in cases {
            let got = repo_dir(root, "huggingface", id).ok();
            assert_eq!(got.as_deref(), want.map(Path::new), "{id:?}");
        }
    }

    #[test]
    fn paths_are_checked_against_the_cache_root() {
        let root = Path::new("/cache");
        let cases: &[(&str, bool)] = &[
            ("/cache/huggingface/a/b/model.gguf", true),
            ("/cache/x", true),
            ("/cache", false),
            ("/cache/../etc/passwd", false),
            ("/cache/a/../../etc", false),
            ("/cachet/x", false),
            ("/etc/passwd", false),
            ("relative/x", false),
        ];
        for (path, ok) in cases {
            assert_eq!(inside(root, PathBuf::from(path)).is_ok(), *ok, "{path}");
        }
    }
}
