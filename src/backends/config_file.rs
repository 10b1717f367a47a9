//! Backends configured by a file instead of flags (MindIE): the server turns the backend
//! parameters into the file's sections (range-checked at deploy time, stored on the instance as
//! `backend_config`); the worker fills in what only it knows (address, port, devices, model path),
//! writes the file next to the instance's logs and points the server at it: mounted read-only at
//! MindIE's own config path in a container, through `MIES_CONFIG_JSON_PATH` for a host process.

use serde_json::{Value, json};

/// Where MindIE reads its config inside its image.
pub const MINDIE_CONFIG_PATH: &str = "/usr/local/Ascend/mindie/latest/mindie-service/conf/config.json";
/// The environment variable MindIE reads the config path from.
pub const MINDIE_CONFIG_ENV: &str = "MIES_CONFIG_JSON_PATH";

/// What the worker knows at launch.
#[derive(Debug, Clone, Copy)]
pub struct RunTime<'a> {
    pub ip: &'a str,
    pub port: u16,
    /// Devices given to the server (logical indexes 0..n inside its device set).
    pub devices: u32,
    pub model_name: &'a str,
    pub model_path: &'a str,
    /// The rendezvous port of a distributed instance.
    pub multi_node_port: Option<u16>,
}

/// `config` with the run-time fields set (sections missing from `config` are created).
pub fn finish_mindie(mut config: Value, rt: &RunTime<'_>) -> Value {
    if !config.is_object() {
        config = json!({});
    }
    let server_fields = [
        ("ipAddress", json!(rt.ip)),
        ("port", json!(rt.port)),
        ("managementPort", json!(rt.port)),
        ("metricsPort", json!(rt.port)),
        ("httpsEnabled", json!(false)),
        ("allowAllZeroIpListening", json!(true)),
        ("openAiSupport", json!("vllm")),
    ];
    if let Some(server) = section(&mut config, &["ServerConfig"]) {
        for (k, v) in server_fields {
            server.insert(k.into(), v);
        }
    }
    let devices: Vec<u32> = (0..rt.devices.max(1)).collect();
    if let Some(backend) = section(&mut config, &["BackendConfig"]) {
        backend.insert("npuDeviceIds".into(), json!([devices]));
        backend.insert("multiNodesInferEnabled".into(), json!(rt.multi_node_port.is_some()));
        if let Some(port) = rt.multi_node_port {
            backend.insert("multiNodesInferPort".into(), json!(port));
        }
    }
    let Some(deploy) = section(&mut config, &["BackendConfig", "ModelDeployConfig"]) else { return config };
    let models = deploy.entry("ModelConfig").or_insert_with(|| json!([{}]));
    if models.as_array().is_none_or(|a| a.is_empty()) {
        *models = json!([{}]);
    }
    if let Some(first) = models.as_array_mut().and_then(|a| a.first_mut()) {
        if !first.is_object() {
            *first = json!({});
        }
        if let Some(m) = first.as_object_mut() {
            m.insert("modelName".into(), json!(rt.model_name));
            m.insert("modelWeightPath".into(), json!(rt.model_path));
            m.insert("worldSize".into(), json!(rt.devices.max(1)));
        }
    }
    config
}

/// The object at `path`, created (replacing any non-object) where missing.
fn section<'v>(root: &'v mut Value, path: &[&str]) -> Option<&'v mut serde_json::Map<String, Value>> {
    let mut at = root;
    for key in path {
        if !at.is_object() {
            *at = json!({});
        }
        at = at.as_object_mut()?.entry(key.to_string()).or_insert_with(|| json!({}));
    }
    if !at.is_object() {
        *at = json!({});
    }
    at.as_object_mut()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rt(multi: Option<u16>) -> RunTime<'static> {
        RunTime {
            ip: "10.0.0.5",
            port: 40001,
            devices: 2,
            model_name: "qwen",
            model_path: "/models/q",
            multi_node_port: multi,
        }
    }

    #[test]
    fn run_time_fields_are_filled_and_parameters_kept() {
        let from_server = json!({
            "ServerConfig": {"maxLinkNum": 300},
            "BackendConfig": {"ModelDeployConfig": {"maxSeqLen": 4096, "ModelConfig": [{"cpuMemSize": 5}]}},
        });
        let got = finish_mindie(from_server, &rt(None));
        assert_eq!(got["ServerConfig"]["maxLinkNum"], 300);
        assert_eq!(got["ServerConfig"]["port"], 40001);
        assert_eq!(got["ServerConfig"]["managementPort"], 40001);
        assert_eq!(got["ServerConfig"]["ipAddress"], "10.0.0.5");
        assert_eq!(got["ServerConfig"]["httpsEnabled"], false);
        assert_eq!(got["BackendConfig"]["npuDeviceIds"], json!([[0, 1]]));
        assert_eq!(got["BackendConfig"]["multiNodesInferEnabled"], false);
        let model = &got["BackendConfig"]["ModelDeployConfig"]["ModelConfig"][0];
        assert_eq!((model["cpuMemSize"].as_u64(), model["worldSize"].as_u64()), (Some(5), Some(2)));
        assert_eq!((model["modelName"].as_str(), model["modelWeightPath"].as_str()), (Some("qwen"), Some("/models/q")));
        assert_eq!(got["BackendConfig"]["ModelDeployConfig"]["maxSeqLen"], 4096);
    }

    #[test]
    fn odd_shapes_are_repaired_not_panicked_on() {
        for start in [
            json!(null),
            json!([]),
            json!({"ServerConfig": 3}),
            json!({"BackendConfig": {"ModelDeployConfig": {"ModelConfig": []}}}),
        ] {
            let got = finish_mindie(start.clone(), &rt(Some(41000)));
            assert_eq!(got["ServerConfig"]["port"], 40001, "{start}");
            assert_eq!(got["BackendConfig"]["multiNodesInferPort"], 41000, "{start}");
            assert_eq!(got["BackendConfig"]["ModelDeployConfig"]["ModelConfig"][0]["worldSize"], 2, "{start}");
        }
    }
}
