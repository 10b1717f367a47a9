//! MindIE has no CLI: its parameter table (GPUStack's `AscendMindIEParameters`) is parsed from
//! backend parameters, every documented range is checked, and the result is translated into the
//! sections of MindIE's JSON config (`ServerConfig`, `BackendConfig.ModelDeployConfig`,
//! `BackendConfig.ScheduleConfig`) plus environment variables.

use serde_json::{Value, json};
use thiserror::Error;

use crate::backends::params::{Param, find_param, parse_params};

/// A MindIE parameter out of its documented range (or unreadable), naming the parameter.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("backend parameter {parameter}: {message}")]
pub struct ParamRangeError {
    pub parameter: String,
    pub message: String,
}

fn bad(parameter: &str, message: impl Into<String>) -> ParamRangeError {
    ParamRangeError { parameter: parameter.to_owned(), message: message.into() }
}

/// MindIE's parameters with GPUStack's defaults (`npu_memory_fraction` 0.8 per the notes).
#[derive(Debug, Clone, PartialEq)]
pub struct MindieParams {
    pub log_level: String,
    pub max_link_num: i64,
    pub token_timeout: i64,
    pub e2e_timeout: i64,
    pub max_seq_len: u64,
    pub max_input_token_len: u64,
    pub truncation: bool,
    pub cpu_mem_size: u64,
    pub npu_memory_fraction: f64,
    pub trust_remote_code: bool,
    pub cache_block_size: u64,
    pub max_prefill_batch_size: u64,
    pub prefill_time_ms_per_req: i64,
    pub prefill_policy_type: i64,
    pub max_batch_size: u64,
    pub decode_time_ms_per_req: i64,
    pub decode_policy_type: i64,
    pub max_preempt_count: u64,
    pub support_select_batch: bool,
    pub max_queue_delay_microseconds: i64,
    pub enforce_eager: bool,
    pub no_metrics: bool,
    pub dtype: String,
    pub override_generation_config: Option<Value>,
    pub rope_scaling: Option<Value>,
    pub enable_split: bool,
    pub policy_type: i64,
    pub split_chunk_tokens: i64,
    pub split_start_batch_size: i64,
    pub enable_memory_decoding: bool,
    pub memory_decoding_length: i64,
    pub enable_lookahead: bool,
    pub lookahead_level: i64,
    pub lookahead_window: i64,
    pub lookahead_guess_set_size: i64,
    pub enable_multi_token_prediction: bool,
    pub multi_token_prediction_tokens: i64,
    pub enable_prefix_caching: bool,
    pub pipeline_parallel_size: i64,
    pub tensor_parallel_size: i64,
    pub data_parallel_size: i64,
    pub sequence_parallel_size: i64,
    pub moe_tensor_parallel_size: i64,
    pub moe_expert_parallel_size: i64,
    pub enable_buffer_response: bool,
    pub prefill_expected_time_ms: Option<i64>,
    pub decode_expected_time_ms: Option<i64>,
}

impl Default for MindieParams {
    fn default() -> Self {
        Self {
            log_level: "Info".into(),
            max_link_num: 1000,
            token_timeout: 600,
            e2e_timeout: 600,
            max_seq_len: 8192,
            max_input_token_len: 0,
            truncation: false,
            cpu_mem_size: 0,
            npu_memory_fraction: 0.8,
            trust_remote_code: false,
            cache_block_size: 128,
            max_prefill_batch_size: 50,
            prefill_time_ms_per_req: 150,
            prefill_policy_type: 0,
            max_batch_size: 200,
            decode_time_ms_per_req: 50,
            decode_policy_type: 0,
            max_preempt_count: 0,
            support_select_batch: false,
            max_queue_delay_microseconds: 5000,
            enforce_eager: false,
            no_metrics: false,
            dtype: "auto".into(),
            override_generation_config: None,
            rope_scaling: None,
            enable_split: false,
            policy_type: 0,
            split_chunk_tokens: 512,
            split_start_batch_size: 16,
            enable_memory_decoding: false,
            memory_decoding_length: 16,
            enable_lookahead: false,
            lookahead_level: 4,
            lookahead_window: 5,
            lookahead_guess_set_size: 5,
            enable_multi_token_prediction: false,
            multi_token_prediction_tokens: 1,
            enable_prefix_caching: false,
            pipeline_parallel_size: 1,
            tensor_parallel_size: -1,
            data_parallel_size: -1,
            sequence_parallel_size: -1,
            moe_tensor_parallel_size: -1,
            moe_expert_parallel_size: -1,
            enable_buffer_response: false,
            prefill_expected_time_ms: None,
            decode_expected_time_ms: None,
        }
    }
}

struct Reader {
    params: Vec<Param>,
}

impl Reader {
    fn raw(&self, names: &[&str]) -> Option<(String, String)> {
        names.iter().find_map(|n| {
            let p = find_param(&self.params, n)?;
            Some((p.flag.clone().unwrap_or_default(), p.values.first().cloned().unwrap_or_default()))
        })
    }

    fn num<T: std::str::FromStr>(&self, names: &[&str], into: &mut T) -> Result<(), ParamRangeError> {
        if let Some((flag, value)) = self.raw(names) {
            *into = value.parse().map_err(|_| bad(&flag, format!("{value:?} is not a number")))?;
        }
        Ok(())
    }

    fn text(&self, names: &[&str], into: &mut String, choices: &[&str]) -> Result<(), ParamRangeError> {
        if let Some((flag, value)) = self.raw(names) {
            if !choices.contains(&value.as_str()) {
                return Err(bad(&flag, format!("{value:?} is not one of {}", choices.join(", "))));
            }
            *into = value;
        }
        Ok(())
    }

    /// `--x`, `--x true|false`, and `--no-x` (argparse BooleanOptionalAction).
    fn flag(&self, name: &str, into: &mut bool) -> Result<(), ParamRangeError> {
        if let Some((flag, value)) = self.raw(&[name]) {
            *into = match value.to_ascii_lowercase().as_str() {
                "" | "true" | "1" | "yes" => true,
                "false" | "0" | "no" => false,
                _ => return Err(bad(&flag, format!("{value:?} is not a boolean"))),
            };
        } else if self.raw(&[&format!("no-{name}")]).is_some() {
            *into = false;
        }
        Ok(())
    }

    fn json(&self, name: &str) -> Result<Option<Value>, ParamRangeError> {
        match self.raw(&[name]) {
            None => Ok(None),
            Some((flag, value)) => {
                serde_json::from_str(&value).map(Some).map_err(|_| bad(&flag, "must be a valid JSON string"))
            }
        }
    }
}

fn in_range(name: &str, value: i64, lo: i64, hi: i64) -> Result<(), ParamRangeError> {
    if (lo..=hi).contains(&value) {
        Ok(())
    } else {
        Err(bad(name, format!("{value} must be in the range [{lo}, {hi}]")))
    }
}

fn power_of_two_or_unset(name: &str, value: i64) -> Result<(), ParamRangeError> {
    if value > 0 && value & (value - 1) != 0 {
        return Err(bad(name, format!("{value} must be a power of 2")));
    }
    Ok(())
}

fn i(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl MindieParams {
    /// Parses MindIE's parameters (unknown flags are ignored, as GPUStack's `parse_known_args`
    /// does) with `max_seq_len` defaulting to the derived context, then checks every range.
    pub fn parse(items: &[String], derived_max_seq_len: u64) -> Result<Self, ParamRangeError> {
        let params = parse_params(items).map_err(|e| bad(e.parameter(), e.to_string()))?;
        let r = Reader { params };
        let mut p = Self { max_seq_len: derived_max_seq_len, ..Self::default() };
        r.text(&["log-level"], &mut p.log_level, &["Verbose", "Info", "Warning", "Warn", "Error", "Debug"])?;
        r.num(&["max-link-num"], &mut p.max_link_num)?;
        r.num(&["token-timeout"], &mut p.token_timeout)?;
        r.num(&["e2e-timeout"], &mut p.e2e_timeout)?;
        let mut max_seq_len = i(p.max_seq_len);
        r.num(&["max-seq-len"], &mut max_seq_len)?;
        let mut max_input = -1i64;
        r.num(&["max-input-token-len"], &mut max_input)?;
        r.flag("truncation", &mut p.truncation)?;
        let mut cpu_mem = 0i64;
        r.num(&["cpu-mem-size"], &mut cpu_mem)?;
        r.num(&["npu-memory-fraction"], &mut p.npu_memory_fraction)?;
        r.flag("trust-remote-code", &mut p.trust_remote_code)?;
        let (mut block, mut prefill_batch, mut batch, mut preempt) = (128i64, 50i64, 200i64, 0i64);
        r.num(&["cache-block-size"], &mut block)?;
        r.num(&["max-prefill-batch-size"], &mut prefill_batch)?;
        r.num(&["prefill-time-ms-per-req"], &mut p.prefill_time_ms_per_req)?;
        r.num(&["prefill-policy-type"], &mut p.prefill_policy_type)?;
        r.num(&["max-batch-size"], &mut batch)?;
        r.num(&["decode-time-ms-per-req"], &mut p.decode_time_ms_per_req)?;
        r.num(&["decode-policy-type"], &mut p.decode_policy_type)?;
        r.num(&["max-preempt-count"], &mut preempt)?;
        r.flag("support-select-batch", &mut p.support_select_batch)?;
        r.num(&["max-queue-delay-microseconds"], &mut p.max_queue_delay_microseconds)?;
        p.override_generation_config = r.json("override-generation-config")?;
        r.flag("enable-memory-decoding", &mut p.enable_memory_decoding)?;
        r.num(&["memory-decoding-length"], &mut p.memory_decoding_length)?;
        r.flag("enable-lookahead", &mut p.enable_lookahead)?;
        r.num(&["lookahead-level"], &mut p.lookahead_level)?;
        r.num(&["lookahead-window"], &mut p.lookahead_window)?;
        r.num(&["lookahead-guess-set-size"], &mut p.lookahead_guess_set_size)?;
        r.flag("enable-buffer-response", &mut p.enable_buffer_response)?;
        let (mut prefill_slo, mut decode_slo) = (0i64, 0i64);
        if r.raw(&["prefill-expected-time-ms"]).is_some() {
            r.num(&["prefill-expected-time-ms"], &mut prefill_slo)?;
            p.prefill_expected_time_ms = Some(prefill_slo);
        }
        if r.raw(&["decode-expected-time-ms"]).is_some() {
            r.num(&["decode-expected-time-ms"], &mut decode_slo)?;
            p.decode_expected_time_ms = Some(decode_slo);
        }
        r.flag("enable-split", &mut p.enable_split)?;
        r.num(&["policy-type"], &mut p.policy_type)?;
        r.num(&["split-chunk-tokens"], &mut p.split_chunk_tokens)?;
        r.num(&["split-start-batch-size"], &mut p.split_start_batch_size)?;
        r.flag("enable-multi-token-prediction", &mut p.enable_multi_token_prediction)?;
        r.num(&["multi-token-prediction-tokens"], &mut p.multi_token_prediction_tokens)?;
        r.flag("enable-prefix-caching", &mut p.enable_prefix_caching)?;
        r.flag("no-metrics", &mut p.no_metrics)?;
        r.flag("enforce-eager", &mut p.enforce_eager)?;
        r.text(&["dtype"], &mut p.dtype, &["auto", "half", "float16", "bfloat16", "float", "float32"])?;
        r.num(&["pipeline-parallel-size", "pp"], &mut p.pipeline_parallel_size)?;
        r.num(&["data-parallel-size", "dp"], &mut p.data_parallel_size)?;
        r.num(&["tensor-parallel-size", "tp"], &mut p.tensor_parallel_size)?;
        r.num(&["sequence-parallel-size", "sp"], &mut p.sequence_parallel_size)?;
        r.num(&["moe-expert-parallel-size", "moe-ep"], &mut p.moe_expert_parallel_size)?;
        r.num(&["moe-tensor-parallel-size", "moe-tp"], &mut p.moe_tensor_parallel_size)?;
        p.rope_scaling = r.json("rope-scaling")?;

        // Ranges (GPUStack `_validate`), checked on the signed values before narrowing.
        in_range("--max-link-num", p.max_link_num, 1, 1000)?;
        in_range("--token-timeout", p.token_timeout, 1, 3600)?;
        in_range("--e2e-timeout", p.e2e_timeout, 1, 3600)?;
        if max_seq_len <= 0 {
            return Err(bad("--max-seq-len", format!("{max_seq_len} must be greater than 0")));
        }
        if max_input <= 0 {
            max_input = max_seq_len;
        }
        if max_input > max_seq_len {
            return Err(bad(
                "--max-input-token-len",
                format!("{max_input} must be in the range (0, --max-seq-len {max_seq_len}]"),
            ));
        }
        if cpu_mem < 0 {
            return Err(bad("--cpu-mem-size", format!("{cpu_mem} must be greater than or equal to 0")));
        }
        if !(p.npu_memory_fraction > 0.0 && p.npu_memory_fraction <= 1.0) {
            return Err(bad("--npu-memory-fraction", format!("{} must be in the range (0, 1]", p.npu_memory_fraction)));
        }
        if block <= 0 || block & (block - 1) != 0 {
            return Err(bad("--cache-block-size", format!("{block} must be a power of 2")));
        }
        in_range("--max-batch-size", batch, 1, 5000)?;
        in_range("--max-prefill-batch-size", prefill_batch, 1, batch)?;
        in_range("--prefill-time-ms-per-req", p.prefill_time_ms_per_req, 0, 1000)?;
        in_range("--decode-time-ms-per-req", p.decode_time_ms_per_req, 0, 1000)?;
        in_range("--max-preempt-count", preempt, 0, batch)?;
        in_range("--max-queue-delay-microseconds", p.max_queue_delay_microseconds, 500, 1_000_000)?;
        in_range("--prefill-policy-type", p.prefill_policy_type, 0, 3)?;
        in_range("--decode-policy-type", p.decode_policy_type, 0, 3)?;
        if ![0, 4, 5, 6, 7].contains(&p.policy_type) {
            return Err(bad("--policy-type", format!("{} is not one of 0, 4, 5, 6, 7", p.policy_type)));
        }
        if p.enable_split {
            in_range("--split-chunk-tokens", p.split_chunk_tokens, 512, max_input)?;
            in_range("--split-start-batch-size", p.split_start_batch_size, 0, batch)?;
        }
        if p.pipeline_parallel_size <= 0 {
            return Err(bad("--pipeline-parallel-size", "must be greater than 0"));
        }
        power_of_two_or_unset("--tensor-parallel-size", p.tensor_parallel_size)?;
        power_of_two_or_unset("--data-parallel-size", p.data_parallel_size)?;
        power_of_two_or_unset("--sequence-parallel-size", p.sequence_parallel_size)?;
        power_of_two_or_unset("--moe-tensor-parallel-size", p.moe_tensor_parallel_size)?;
        power_of_two_or_unset("--moe-expert-parallel-size", p.moe_expert_parallel_size)?;
        if p.pipeline_parallel_size != 1 && p.data_parallel_size != -1 {
            return Err(bad("--pipeline-parallel-size", "cannot be set together with --data-parallel-size"));
        }
        if p.sequence_parallel_size > 1
            && p.pipeline_parallel_size == 1
            && p.sequence_parallel_size != p.tensor_parallel_size
        {
            return Err(bad("--sequence-parallel-size", "must equal --tensor-parallel-size"));
        }
        if p.enable_memory_decoding {
            in_range("--memory-decoding-length", p.memory_decoding_length, 1, 16)?;
        }
        if p.enable_lookahead {
            in_range("--lookahead-level", p.lookahead_level, 3, 16)?;
            in_range("--lookahead-window", p.lookahead_window, 1, 16)?;
            in_range("--lookahead-guess-set-size", p.lookahead_guess_set_size, 1, 16)?;
        }
        if p.enable_multi_token_prediction && p.multi_token_prediction_tokens <= 0 {
            return Err(bad("--multi-token-prediction-tokens", "must be greater than 0"));
        }
        if p.enable_buffer_response {
            for (name, value) in [
                ("--prefill-expected-time-ms", p.prefill_expected_time_ms),
                ("--decode-expected-time-ms", p.decode_expected_time_ms),
            ] {
                match value {
                    None => return Err(bad(name, "is required when --enable-buffer-response is enabled")),
                    Some(v) if v <= 0 => return Err(bad(name, "must be greater than 0")),
                    _ => {}
                }
            }
        }
        p.check_compatibility()?;
        p.max_seq_len = max_seq_len.unsigned_abs();
        p.max_input_token_len = max_input.unsigned_abs();
        // Swap space only works with preemption (GPUStack `_default`).
        p.cpu_mem_size = if preempt == 0 { 0 } else { cpu_mem.unsigned_abs() };
        p.cache_block_size = block.unsigned_abs();
        p.max_prefill_batch_size = prefill_batch.unsigned_abs();
        p.max_batch_size = batch.unsigned_abs();
        p.max_preempt_count = preempt.unsigned_abs();
        Ok(p)
    }

    fn check_compatibility(&self) -> Result<(), ParamRangeError> {
        let rope = self.rope_scaling.is_some();
        let speculative = self.enable_memory_decoding || self.enable_lookahead;
        let rules: [(bool, &str, &str); 9] = [
            (
                self.enable_split && speculative,
                "--enable-split",
                "does not work with --enable-memory-decoding or --enable-lookahead",
            ),
            (self.enable_split && rope, "--rope-scaling", "is not supported when --enable-split is enabled"),
            (
                self.enable_memory_decoding && self.enable_lookahead,
                "--enable-lookahead",
                "is not supported when --enable-memory-decoding is enabled",
            ),
            (speculative && rope, "--rope-scaling", "is not supported with memory decoding or lookahead"),
            (
                self.enable_multi_token_prediction && (speculative || self.enable_split),
                "--enable-multi-token-prediction",
                "does not work with memory decoding, lookahead or split fuse",
            ),
            (
                self.enable_multi_token_prediction && rope,
                "--rope-scaling",
                "is not supported when --enable-multi-token-prediction is enabled",
            ),
            (
                self.enable_prefix_caching && rope,
                "--rope-scaling",
                "is not supported when --enable-prefix-caching is enabled",
            ),
            (
                self.data_parallel_size > 1 && (speculative || self.enable_split),
                "--data-parallel-size",
                "> 1 does not work with memory decoding, lookahead or split fuse",
            ),
            (
                self.data_parallel_size > 1 && self.enable_prefix_caching,
                "--enable-prefix-caching",
                "is not supported when --data-parallel-size > 1",
            ),
        ];
        match rules.iter().find(|(broken, _, _)| *broken) {
            Some((_, name, message)) => Err(bad(name, *message)),
            None => Ok(()),
        }
    }

    /// MindIE's JSON config sections for these parameters.
    pub fn to_config(&self) -> Value {
        json!({
            "LogConfig": { "logLevel": self.log_level },
            "ServerConfig": { "maxLinkNum": self.max_link_num, "tokenTimeout": self.token_timeout, "e2eTimeout": self.e2e_timeout },
            "BackendConfig": {
                "ModelDeployConfig": {
                    "maxSeqLen": self.max_seq_len,
                    "maxInputTokenLen": self.max_input_token_len,
                    "truncation": self.truncation,
                    "ModelConfig": [{ "cpuMemSize": self.cpu_mem_size, "trustRemoteCode": self.trust_remote_code }],
                },
                "ScheduleConfig": {
                    "cacheBlockSize": self.cache_block_size,
                    "maxPrefillBatchSize": self.max_prefill_batch_size,
                    "maxPrefillTokens": self.max_seq_len,
                    "maxIterTimes": self.max_seq_len,
                    "prefillTimeMsPerReq": self.prefill_time_ms_per_req,
                    "prefillPolicyType": self.prefill_policy_type,
                    "maxBatchSize": self.max_batch_size,
                    "decodeTimeMsPerReq": self.decode_time_ms_per_req,
                    "decodePolicyType": self.decode_policy_type,
                    "maxPreemptCount": self.max_preempt_count,
                    "supportSelectBatch": self.support_select_batch,
                    "maxQueueDelayMicroseconds": self.max_queue_delay_microseconds,
                },
            },
        })
    }

    /// Environment the MindIE container needs for these parameters.
    pub fn env(&self) -> Vec<(String, String)> {
        let mut env = vec![
            ("NPU_MEMORY_FRACTION".to_owned(), self.npu_memory_fraction.to_string()),
            ("MIES_USE_MB_SWAPPER".to_owned(), if self.cpu_mem_size > 0 { "1" } else { "0" }.to_owned()),
            ("MINDIE_LOG_LEVEL".to_owned(), self.log_level.to_ascii_uppercase()),
        ];
        if self.no_metrics {
            env.push(("MIES_SERVICE_MONITOR_MODE".into(), "0".into()));
        }
        if self.enforce_eager {
            env.extend(
                [
                    ("MINDIE_ASYNC_SCHEDULING_ENABLE", "0"),
                    ("TASK_QUEUE_ENABLE", "0"),
                    ("ATB_OPERATION_EXECUTE_ASYNC", "0"),
                    ("ASCEND_LAUNCH_BLOCKING", "1"),
                ]
                .map(|(k, v)| (k.to_owned(), v.to_owned())),
            );
        }
        env
    }
}

/// MindIE's JSON config for `params` (max_seq_len defaulting to 8192), every range checked.
pub fn mindie_config(params: &[String]) -> Result<Value, ParamRangeError> {
    Ok(MindieParams::parse(params, 8192)?.to_config())
}
