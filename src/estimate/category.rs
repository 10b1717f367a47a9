//! Architecture → category: an explicit table for the families that matter, then suffix rules
//! (`*ForCausalLM` → LLM, `*ForSequenceClassification` → reranker, bare `*Model` → embedding).

use super::Category;
use super::gguf::GgufHeader;

/// Known architectures (and `model_type`s) by category. Matched case-insensitively, by prefix
/// for families (`Whisper…`, `CosyVoice…`).
const FAMILIES: &[(&str, Category)] = &[
    // Speech-to-text.
    ("Whisper", Category::SpeechToText),
    ("SenseVoice", Category::SpeechToText),
    ("Paraformer", Category::SpeechToText),
    ("FunASR", Category::SpeechToText),
    ("Wav2Vec2", Category::SpeechToText),
    ("SpeechEncoderDecoder", Category::SpeechToText),
    // Text-to-speech.
    ("CosyVoice", Category::TextToSpeech),
    ("Dia", Category::TextToSpeech),
    ("Bark", Category::TextToSpeech),
    ("Kokoro", Category::TextToSpeech),
    ("FishSpeech", Category::TextToSpeech),
    ("F5TTS", Category::TextToSpeech),
    ("SpeechT5ForTextToSpeech", Category::TextToSpeech),
    ("Vits", Category::TextToSpeech),
    ("ParlerTTS", Category::TextToSpeech),
    ("OuteTTS", Category::TextToSpeech),
    ("Qwen3TTS", Category::TextToSpeech),
    ("SparkTTS", Category::TextToSpeech),
    ("Orpheus", Category::TextToSpeech),
    // Rerankers (cross-encoders).
    ("XLMRobertaForSequenceClassification", Category::Reranker),
    ("BertForSequenceClassification", Category::Reranker),
    ("RobertaForSequenceClassification", Category::Reranker),
    ("Qwen3ForSequenceClassification", Category::Reranker),
    ("Qwen2ForSequenceClassification", Category::Reranker),
    ("GemmaForSequenceClassification", Category::Reranker),
    ("LlamaForSequenceClassification", Category::Reranker),
    ("ModernBertForSequenceClassification", Category::Reranker),
    ("JinaVLForRanking", Category::Reranker),
    // Embeddings.
    ("BertModel", Category::Embedding),
    ("RobertaModel", Category::Embedding),
    ("XLMRobertaModel", Category::Embedding),
    ("NomicBertModel", Category::Embedding),
    ("GteModel", Category::Embedding),
    ("GteNewModel", Category::Embedding),
    ("NewModel", Category::Embedding),
    ("ModernBertModel", Category::Embedding),
    ("MPNetModel", Category::Embedding),
    ("JinaBertModel", Category::Embedding),
    ("CLIPModel", Category::Embedding),
    ("SiglipModel", Category::Embedding),
    ("LlamaModel", Category::Embedding),
    ("MistralModel", Category::Embedding),
    ("Qwen2Model", Category::Embedding),
    ("Qwen3Model", Category::Embedding),
    ("Gemma2Model", Category::Embedding),
    ("Gemma3TextModel", Category::Embedding),
    ("T5EncoderModel", Category::Embedding),
];

/// `model_type` values (config.json without `architectures`, e.g. faster-whisper exports).
const MODEL_TYPES: &[(&str, Category)] = &[
    ("whisper", Category::SpeechToText),
    ("bert", Category::Embedding),
    ("xlm-roberta", Category::Embedding),
    ("nomic_bert", Category::Embedding),
    ("bark", Category::TextToSpeech),
    ("vits", Category::TextToSpeech),
    ("dia", Category::TextToSpeech),
];

/// Encoder-only families: no KV cache at serving time.
const ENCODERS: &[&str] = &[
    "Bert",
    "Roberta",
    "XLMRoberta",
    "NomicBert",
    "Gte",
    "NewModel",
    "ModernBert",
    "MPNet",
    "JinaBert",
    "Electra",
    "DistilBert",
    "DebertaV2",
    "CLIP",
    "Siglip",
    "T5Encoder",
];

fn starts_with_ci(text: &str, prefix: &str) -> bool {
    text.len() >= prefix.len()
        && text.is_char_boundary(prefix.len())
        && text[..prefix.len()].eq_ignore_ascii_case(prefix)
}

/// The category of an HF architecture (`architectures[0]`), with `model_type` as a fallback.
pub fn category_for_architecture(architecture: &str, model_type: Option<&str>) -> Category {
    let arch = architecture.trim();
    // Exact names first (`DiaForConditionalGeneration` must not be read as an LLM by suffix).
    if let Some((_, c)) = FAMILIES.iter().find(|(name, _)| arch.eq_ignore_ascii_case(name)) {
        return *c;
    }
    let family = FAMILIES
        .iter()
        .filter(|(name, c)| {
            !name.ends_with("Model") && !name.contains("For") && starts_with_ci(arch, name) && is_family(*c)
        })
        .map(|(_, c)| *c)
        .next();
    if let Some(c) = family {
        return c;
    }
    let lower = arch.to_ascii_lowercase();
    if lower.contains("tts") || lower.contains("texttospeech") {
        return Category::TextToSpeech;
    }
    if lower.ends_with("forsequenceclassification") || lower.ends_with("forranking") {
        return Category::Reranker;
    }
    if lower.ends_with("forcausallm") || lower.ends_with("forconditionalgeneration") || lower.ends_with("lmheadmodel") {
        return Category::Llm;
    }
    if lower.ends_with("embeddingmodel") || lower.ends_with("forembedding") || lower.ends_with("fortextembedding") {
        return Category::Embedding;
    }
    if arch.is_empty()
        && let Some(mt) = model_type
        && let Some((_, c)) = MODEL_TYPES.iter().find(|(t, _)| mt.eq_ignore_ascii_case(t))
    {
        return *c;
    }
    if lower.ends_with("model") && !lower.is_empty() {
        return Category::Embedding;
    }
    Category::Llm
}

/// Audio families are matched by prefix; other table rows only exactly.
fn is_family(c: Category) -> bool {
    matches!(c, Category::SpeechToText | Category::TextToSpeech)
}

/// Whether an architecture is encoder-only (no KV cache while serving).
pub fn is_encoder_only(architecture: &str) -> bool {
    ENCODERS.iter().any(|e| starts_with_ci(architecture, e))
}

/// GGUF category from metadata hints: pooling type (4 = rank → reranker, other non-zero →
/// embedding), encoder architectures (bert, nomic-bert, …) → embedding, diffusion → image.
pub fn category_for_gguf(header: &GgufHeader) -> Category {
    let arch = header.str("general.architecture").unwrap_or_default();
    match header.u64(&format!("{arch}.pooling_type")) {
        Some(4) => return Category::Reranker,
        Some(0) | None => {}
        Some(_) => return Category::Embedding,
    }
    let lower = arch.to_ascii_lowercase();
    if ["bert", "nomic-bert", "nomic-bert-moe", "jina-bert-v2", "jina-bert-v3", "t5encoder", "neo-bert", "modern-bert"]
        .contains(&lower.as_str())
    {
        return Category::Embedding;
    }
    if ["sd", "sdxl", "sd3", "flux", "diffusion"].iter().any(|p| lower.starts_with(p)) {
        return Category::Image;
    }
    if lower.contains("tts") || lower.starts_with("outetts") || lower == "wavtokenizer-dec" {
        return Category::TextToSpeech;
    }
    if lower.starts_with("whisper") {
        return Category::SpeechToText;
    }
    Category::Llm
}
