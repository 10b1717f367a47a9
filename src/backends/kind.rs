//! Which built-in backend a backend name means: the server injects parameters and the worker
//! launches distributed parts differently for each. Names match case-insensitively, with the
//! spellings GPUStack and its users write.

/// How an engine receives the instance's key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyDelivery {
    /// A flag naming a file that holds the key (0600, in the instance's directory on the worker).
    File(&'static str),
    /// An environment variable (`/proc/<pid>/environ` is readable by the engine's user only).
    Env(&'static str),
    /// A flag with the key itself: visible in the process list; for engines with no other way.
    Flag(&'static str),
}

/// A built-in backend, or `Other` for community and custom ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Vllm,
    Sglang,
    Mindie,
    Voxbox,
    LlamaCpp,
    Other,
}

pub fn kind_of(backend: &str) -> Kind {
    match backend.to_ascii_lowercase().as_str() {
        "vllm" => Kind::Vllm,
        "sglang" => Kind::Sglang,
        "mindie" | "ascend-mindie" | "ascend_mindie" => Kind::Mindie,
        "voxbox" | "vox-box" => Kind::Voxbox,
        "llama.cpp" | "llama-cpp" | "llamacpp" | "llama-box" => Kind::LlamaCpp,
        _ => Kind::Other,
    }
}

impl Kind {
    /// Spellings of one flag the engine accepts, as keys (dashes stripped, `_` read as `-`): the
    /// first of each group is the canonical key. Used so that `-tp 2` and an injected
    /// `--tensor-parallel-size=2` count as the same flag.
    pub fn flag_aliases(self) -> &'static [&'static [&'static str]] {
        match self {
            Kind::Vllm => &[
                &["tensor-parallel-size", "tp"],
                &["pipeline-parallel-size", "pp"],
                &["data-parallel-size", "dp"],
                &["quantization", "q"],
            ],
            Kind::Sglang => &[
                &["tp-size", "tensor-parallel-size"],
                &["pp-size", "pipeline-parallel-size"],
                &["dp-size", "data-parallel-size"],
                &["model-path", "model"],
            ],
            Kind::LlamaCpp => &[
                &["ctx-size", "c"],
                &["model", "m"],
                &["alias", "a"],
                &["threads", "t"],
                &["parallel", "np"],
                &["n-gpu-layers", "ngl", "gpu-layers"],
                &["embeddings", "embedding"],
            ],
            Kind::Voxbox | Kind::Mindie | Kind::Other => &[],
        }
    }

    /// The canonical key of `key` (already without dashes) for this engine.
    pub fn canonical_key(self, key: &str) -> String {
        self.flag_aliases()
            .iter()
            .find(|group| group.contains(&key))
            .and_then(|group| group.first())
            .map_or_else(|| key.to_owned(), |first| (*first).to_owned())
    }

    /// Flags the manager sets and users may not (canonical keys), besides every flag whose value in
    /// the run command is one of the manager's placeholders. `port` and `host` for every backend:
    /// ports are allocated per instance and the engine listens where the worker probes it.
    pub fn owned_flags(self) -> &'static [&'static str] {
        match self {
            Kind::Vllm => &["port", "host", "served-model-name", "model"],
            Kind::Sglang => &["port", "host", "served-model-name", "model-path"],
            Kind::Voxbox => &["port", "host", "model", "data-dir"],
            Kind::LlamaCpp => &["port", "host", "model", "alias"],
            Kind::Mindie | Kind::Other => &["port", "host"],
        }
    }

    /// Whether the engine checks a key (vLLM, SGLang, llama.cpp's server): the server gives it the
    /// instance's own key, so only the gateway can call it.
    pub fn takes_api_key(self) -> bool {
        self.key_delivery().is_some()
    }

    /// How the engine is given its key, kept off the command line (where `ps` shows it to every
    /// local user) wherever the engine reads it from elsewhere.
    pub fn key_delivery(self) -> Option<KeyDelivery> {
        match self {
            // llama-server: `--api-key-file FNAME` (one key per line); `LLAMA_API_KEY` also works.
            Kind::LlamaCpp => Some(KeyDelivery::File("api-key-file")),
            // vLLM: `args.api_key or [envs.VLLM_API_KEY]` (entrypoints/openai/api_server.py).
            Kind::Vllm => Some(KeyDelivery::Env("VLLM_API_KEY")),
            // SGLang 0.5.x reads `--api-key` only (no environment variable, no key file).
            Kind::Sglang => Some(KeyDelivery::Flag("api-key")),
            Kind::Mindie | Kind::Voxbox | Kind::Other => None,
        }
    }

    /// Whether the engine takes its settings from a config file instead of command-line flags.
    pub fn configured_by_file(self) -> bool {
        self == Kind::Mindie
    }

    /// Whether one replica may run across workers: a multi-node launch exists for it
    /// (`backends::distributed`; custom backends bring their own command).
    pub fn supports_distributed(self) -> bool {
        match self {
            Kind::Vllm | Kind::Sglang | Kind::Other => true,
            // No multi-node launch here (MindIE would need a rank table): each worker would run a
            // whole server on a share of the memory.
            Kind::LlamaCpp | Kind::Voxbox | Kind::Mindie => false,
        }
    }

    /// Whether a GPU selection over several workers means distributed inference even when the
    /// deployment says nothing (GPUStack takes its SDK's `null` as true for these engines).
    pub fn distributed_by_default(self) -> bool {
        match self {
            Kind::Vllm | Kind::Sglang => true,
            Kind::LlamaCpp | Kind::Voxbox | Kind::Mindie | Kind::Other => false,
        }
    }

    /// The engine's tensor-parallel flag, canonical spelling first.
    pub fn tp_flags(self) -> &'static [&'static str] {
        match self {
            Kind::Vllm => &["tensor-parallel-size", "tp"],
            Kind::Sglang => &["tp-size", "tensor-parallel-size"],
            Kind::LlamaCpp | Kind::Voxbox | Kind::Mindie | Kind::Other => &[],
        }
    }

    /// Whether the engine serves GGUF files (the estimate then reads the GGUF's own layout).
    pub fn reads_gguf(self) -> bool {
        match self {
            Kind::LlamaCpp | Kind::Other => true,
            Kind::Vllm | Kind::Sglang | Kind::Voxbox | Kind::Mindie => false,
        }
    }

    /// Whether the engine sizes its memory itself from its own settings (MindIE's NPU memory
    /// fraction), so the estimate's KV cache and the `fit` policy do not apply.
    pub fn sizes_its_own_memory(self) -> bool {
        match self {
            Kind::Mindie => true,
            Kind::Vllm | Kind::Sglang | Kind::LlamaCpp | Kind::Voxbox | Kind::Other => false,
        }
    }

    /// Whether a replica with no GPU runs wholly in RAM (VoxBox's CPU mode; custom commands).
    pub fn runs_on_cpu_alone(self) -> bool {
        match self {
            Kind::Voxbox | Kind::Other => true,
            Kind::Vllm | Kind::Sglang | Kind::LlamaCpp | Kind::Mindie => false,
        }
    }

    /// The flag that sets the engine's GPU memory budget as a fraction of the card, if it has one.
    pub fn memory_fraction_flag(self) -> Option<&'static str> {
        match self {
            Kind::Vllm => Some("gpu-memory-utilization"),
            Kind::Sglang => Some("mem-fraction-static"),
            Kind::LlamaCpp | Kind::Voxbox | Kind::Mindie | Kind::Other => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_engine_says_what_it_can() {
        // (kind, one replica across workers, distributed unless told, TP flag, memory-fraction flag)
        let table = [
            (Kind::Vllm, true, true, Some("tensor-parallel-size"), Some("gpu-memory-utilization")),
            (Kind::Sglang, true, true, Some("tp-size"), Some("mem-fraction-static")),
            (Kind::LlamaCpp, false, false, None, None),
            (Kind::Voxbox, false, false, None, None),
            (Kind::Mindie, false, false, None, None),
            (Kind::Other, true, false, None, None),
        ];
        for (kind, spans, by_default, tp, fraction) in table {
            assert_eq!(kind.supports_distributed(), spans, "{kind:?}");
            assert_eq!(kind.distributed_by_default(), by_default, "{kind:?}");
            assert_eq!(kind.tp_flags().first().copied(), tp, "{kind:?}");
            assert_eq!(kind.memory_fraction_flag(), fraction, "{kind:?}");
            // Distributed by default only where a multi-node launch exists.
            assert!(!by_default || spans, "{kind:?}");
        }
    }

    #[test]
    fn each_engine_says_how_its_memory_is_sized() {
        // (kind, serves GGUF, sizes its own memory, runs in RAM alone without a GPU)
        let table = [
            (Kind::Vllm, false, false, false),
            (Kind::Sglang, false, false, false),
            (Kind::LlamaCpp, true, false, false),
            (Kind::Voxbox, false, false, true),
            (Kind::Mindie, false, true, false),
            (Kind::Other, true, false, true),
        ];
        for (kind, gguf, own, cpu) in table {
            assert_eq!(
                (kind.reads_gguf(), kind.sizes_its_own_memory(), kind.runs_on_cpu_alone()),
                (gguf, own, cpu),
                "{kind:?}"
            );
        }
    }

    #[test]
    fn names_map_to_kinds() {
        let cases = [
            ("vLLM", Kind::Vllm),
            ("vllm", Kind::Vllm),
            ("SGLang", Kind::Sglang),
            ("ascend-mindie", Kind::Mindie),
            ("MindIE", Kind::Mindie),
            ("vox-box", Kind::Voxbox),
            ("llama.cpp", Kind::LlamaCpp),
            ("vllm-custom", Kind::Other),
            ("Custom", Kind::Other),
        ];
        for (name, kind) in cases {
            assert_eq!(kind_of(name), kind, "{name}");
        }
    }

    #[test]
    fn aliases_map_to_one_key() {
        let cases = [
            (Kind::Vllm, "tp", "tensor-parallel-size"),
            (Kind::Vllm, "tensor-parallel-size", "tensor-parallel-size"),
            (Kind::Sglang, "tensor-parallel-size", "tp-size"),
            (Kind::Sglang, "model", "model-path"),
            (Kind::LlamaCpp, "c", "ctx-size"),
            (Kind::LlamaCpp, "ngl", "n-gpu-layers"),
            (Kind::Other, "c", "c"),
            (Kind::Vllm, "max-model-len", "max-model-len"),
        ];
        for (kind, key, want) in cases {
            assert_eq!(kind.canonical_key(key), want, "{kind:?} {key}");
        }
    }
}
