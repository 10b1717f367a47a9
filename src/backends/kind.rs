//! Which built-in backend a backend name means: the server injects parameters and the worker
//! launches distributed parts differently for each. Names match case-insensitively, with the
//! spellings GPUStack and its users write.

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

#[cfg(test)]
mod tests {
    use super::*;

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
}
