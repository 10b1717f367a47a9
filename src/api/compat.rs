//! Reading GPUStack's request bodies: one layer between the JSON a client sends and our strict types.
//!
//! GPUStack's clients send back what they read (`id`, timestamps, computed state) and what its SDK
//! fills in (`ModelCreate(...).model_dump()`: every field, nulls and defaults included). A body
//! passes through [`normalize`] before it is deserialized into a type that refuses unknown fields:
//!
//! - a field of ours whose value is `null` is dropped, so it takes its default (GPUStack's `None`);
//! - a field GPUStack returns but nobody writes ([`Foreign::ReadOnly`]) is dropped, whatever it holds;
//! - a GPUStack field we do not implement ([`Foreign::Neutral`]) is dropped when it holds a value that
//!   asks for nothing (null, empty, false, GPUStack's default) and refused, naming the field, otherwise;
//! - a privileged field the caller reads but may not set ([`Foreign::Unchanged`]: a user's own
//!   `is_admin` on `/v2/users/me`) is dropped when it holds the stored value ([`check_unchanged`],
//!   called by the handler, which knows the row) and refused, naming the field, otherwise;
//! - any other name stays and is refused by the type: a typo is still caught.
//!
//! Every body type that GPUStack also has lists its foreign fields once, by implementing
//! [`GpuStackBody`]; the server's `Tolerant` extractor and the YAML import both go through here.

use serde::de::{self, DeserializeOwned, Visitor};
use serde_json::{Map, Value};

/// A field GPUStack's API carries that the body type does not read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Foreign {
    /// Computed or server-assigned: accepted and ignored in any value.
    ReadOnly(&'static str),
    /// A GPUStack feature Ferrostack does not have: accepted only holding one of these JSON values.
    Neutral(&'static str, &'static [&'static str]),
    /// A GPUStack feature switched by `enabled`: accepted as null or as an object with `enabled: false`.
    Disabled(&'static str),
    /// Privileged or server-owned, sent back by clients that return what they read: accepted only
    /// holding the stored value, which the handler checks with [`check_unchanged`] before
    /// [`normalize`]; [`normalize`] refuses whatever is left (never dropped unchecked).
    Unchanged(&'static str),
}

impl Foreign {
    pub fn name(self) -> &'static str {
        match self {
            Foreign::ReadOnly(name)
            | Foreign::Neutral(name, _)
            | Foreign::Disabled(name)
            | Foreign::Unchanged(name) => name,
        }
    }
}

/// Fields every stored GPUStack resource returns and no client writes.
pub const COMMON_READ_ONLY: &[Foreign] = &[
    Foreign::ReadOnly("id"),
    Foreign::ReadOnly("created_at"),
    Foreign::ReadOnly("updated_at"),
    Foreign::ReadOnly("deleted_at"),
    Foreign::ReadOnly("system_principal_id"),
    // GPUStack's organisations: principal 1 is its first administrator, the only owner Ferrostack has.
    Foreign::Neutral("owner_principal_id", &["null", "1"]),
];

/// A request body GPUStack's clients also send.
pub trait GpuStackBody: DeserializeOwned {
    /// GPUStack's fields this type does not read (besides [`COMMON_READ_ONLY`]).
    const FOREIGN: &'static [Foreign];
    /// Foreign fields of nested objects: (field, how it nests, the nested objects' foreign fields).
    /// Nulls inside them are dropped too (their types give them defaults).
    const NESTED: &'static [(&'static str, Nesting, &'static [Foreign])] = &[];
    /// Our fields for which null is a value, not "the default" (their default is something else).
    const KEEP_NULL: &'static [&'static str] = &[];
}

/// How a field holds nested objects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nesting {
    /// One object (`extended_kv_cache`).
    Object,
    /// A map of objects (`version_configs`).
    Map,
    /// A list of objects (a route's `targets`).
    List,
}

/// A body field refused because it asks for something Ferrostack does not do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub field: String,
    pub message: String,
}

/// What [`normalize`] took out of a body, besides nulls.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Normalized {
    /// A `version` the body carried when the type has no such field (an update guard).
    pub version: Option<i64>,
}

/// Makes a GPUStack-shaped body readable by `T` (see the module comment). Non-objects pass unchanged.
pub fn normalize<T: GpuStackBody>(body: &mut Value) -> Result<Normalized, Refused> {
    let fields = field_names::<T>();
    let mut out = Normalized::default();
    let Value::Object(map) = body else { return Ok(out) };
    if !fields.contains(&"version") {
        out.version = match map.remove("version") {
            None | Some(Value::Null) => None,
            Some(Value::Number(n)) if n.as_i64().is_some() => n.as_i64(),
            Some(other) => {
                return Err(Refused {
                    field: "version".into(),
                    message: format!("version: must be the row's version (an integer), got {other}"),
                });
            }
        };
    }
    // A field whose null means something is left to the type, null and all.
    let ours: Vec<&str> = fields.iter().copied().filter(|f| !T::KEEP_NULL.contains(f)).collect();
    strip(map, Some(&ours), &[COMMON_READ_ONLY, T::FOREIGN], "")?;
    for (name, nesting, foreign) in T::NESTED {
        match (nesting, map.get_mut(*name)) {
            (Nesting::Object, Some(Value::Object(inner))) => {
                strip(inner, None, &[COMMON_READ_ONLY, foreign], &format!("{name}."))?
            }
            (Nesting::Map, Some(Value::Object(entries))) => {
                for (key, entry) in entries.iter_mut() {
                    if let Value::Object(inner) = entry {
                        strip(inner, None, &[COMMON_READ_ONLY, foreign], &format!("{name}.{key}."))?;
                    }
                }
            }
            (Nesting::List, Some(Value::Array(entries))) => {
                for (index, entry) in entries.iter_mut().enumerate() {
                    if let Value::Object(inner) = entry {
                        strip(inner, None, &[COMMON_READ_ONLY, foreign], &format!("{name}[{index}]."))?;
                    }
                }
            }
            _ => {}
        }
    }
    Ok(out)
}

/// Drops nulls (of `ours`, or of any name when `ours` is `None`) and foreign fields from one object.
fn strip(
    map: &mut Map<String, Value>,
    ours: Option<&[&str]>,
    foreign: &[&[Foreign]],
    prefix: &str,
) -> Result<(), Refused> {
    let keys: Vec<String> = map.keys().cloned().collect();
    for key in keys {
        let Some(value) = map.get(&key) else { continue };
        let rule = foreign.iter().flat_map(|f| f.iter()).find(|f| f.name() == key);
        let is_ours = ours.is_none_or(|names| names.contains(&key.as_str()));
        if rule.is_none() || (is_ours && ours.is_some()) {
            if value.is_null() && is_ours {
                map.remove(&key);
            }
            continue;
        }
        if let Some(Foreign::Unchanged(_)) = rule {
            if value.is_null() {
                map.remove(&key);
                continue;
            }
            return Err(Refused {
                field: format!("{prefix}{key}"),
                message: format!("{prefix}{key}: may not be changed here"),
            });
        }
        let accepted: &[&str] = match rule {
            Some(Foreign::Neutral(_, accepted)) => accepted,
            Some(Foreign::Disabled(_)) => &["null", "false", "an object with \"enabled\": false"],
            _ => &[],
        };
        let neutral = match rule {
            Some(Foreign::Neutral(..)) => {
                accepted.iter().any(|literal| serde_json::from_str::<Value>(literal).is_ok_and(|v| &v == value))
            }
            Some(Foreign::Disabled(_)) => match value {
                Value::Null | Value::Bool(false) => true,
                Value::Object(o) => o.get("enabled").is_none_or(|e| e == &Value::Bool(false)),
                _ => false,
            },
            _ => true,
        };
        if !neutral {
            return Err(Refused {
                field: format!("{prefix}{key}"),
                message: format!(
                    "{prefix}{key}: GPUStack's {key} is not supported by Ferrostack; accepted only as {} (got {value})",
                    accepted.join(" or ")
                ),
            });
        }
        map.remove(&key);
    }
    Ok(())
}

/// Takes the [`Foreign::Unchanged`] fields of `T` out of a body when each holds the value `current`
/// (the stored row as answered, GPUStack's defaults included) has, or null; refuses the first that
/// differs, naming it. Run before [`normalize`], which refuses any such field still there.
pub fn check_unchanged<T: GpuStackBody>(body: &mut Value, current: &Value) -> Result<(), Refused> {
    let Value::Object(map) = body else { return Ok(()) };
    for rule in T::FOREIGN {
        let Foreign::Unchanged(name) = rule else { continue };
        let Some(sent) = map.get(*name) else { continue };
        let stored = current.get(*name).unwrap_or(&Value::Null);
        if !sent.is_null() && sent != stored {
            return Err(Refused {
                field: (*name).to_owned(),
                message: format!("{name}: may not be changed here (it is {stored}, the request asked for {sent})"),
            });
        }
        map.remove(*name);
    }
    Ok(())
}

/// The field names `T` deserializes (empty for types that are not plain structs).
pub fn field_names<T: DeserializeOwned>() -> &'static [&'static str] {
    let mut probe = Probe(None);
    let _ = T::deserialize(&mut probe);
    probe.0.unwrap_or(&[])
}

/// A deserializer that records the field list serde asks for and then gives up.
struct Probe(Option<&'static [&'static str]>);

impl<'de> de::Deserializer<'de> for &mut Probe {
    type Error = de::value::Error;

    fn deserialize_any<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value, Self::Error> {
        Err(de::Error::custom("probe"))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        _visitor: V,
    ) -> Result<V::Value, Self::Error> {
        self.0 = Some(fields);
        Err(de::Error::custom("probe"))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf option unit
        unit_struct newtype_struct seq tuple tuple_struct map enum identifier ignored_any
    }
}

/// Adds the fields GPUStack always answers with (null or empty where we have no value) to a
/// resource's JSON when our type leaves them out. `defaults` holds (field, JSON value).
pub fn with_public_fields(value: &mut Value, defaults: &[(&str, &str)]) {
    let Value::Object(map) = value else { return };
    for (field, default) in defaults {
        if !map.contains_key(*field)
            && let Ok(v) = serde_json::from_str(default)
        {
            map.insert((*field).to_string(), v);
        }
    }
}

/// What GPUStack's `InferenceBackendPublic` always carries.
pub const BACKEND_PUBLIC: &[(&str, &str)] = &[
    ("description", "null"),
    ("health_check_path", "null"),
    ("default_version", "null"),
    ("default_backend_param", "[]"),
    ("default_run_command", "\"\""),
    ("default_entrypoint", "\"\""),
    ("default_env", "{}"),
    ("parameter_format", "null"),
    ("common_parameters", "[]"),
    ("icon", "null"),
    ("source_name", "null"),
    ("source_type", "null"),
    ("built_in_version_configs", "{}"),
    ("framework_index_map", "{}"),
];

/// What GPUStack's `VersionConfig` always carries.
pub const VERSION_CONFIG_PUBLIC: &[(&str, &str)] = &[
    ("image_name", "null"),
    ("run_command", "null"),
    ("entrypoint", "null"),
    ("custom_framework", "null"),
    ("built_in_frameworks", "null"),
    ("env", "null"),
];

// ---- GPUStack 2.3.0's fields per body type (from its `*Create`, `*Update` and `*Public` schemas) ----

use super::backend::InferenceBackendSpec;
use super::gateway::{ModelRouteCreate, ModelRouteTargetCreate};
use super::model::ModelSpec;
use super::{
    ApiKeyCreate, ApiKeyUpdate, ClusterCreate, ClusterUpdate, UserCreate, UserSelfUpdate, UserUpdate, WorkerUpdate,
};

const NULL: &[&str] = &["null"];
const NULL_OR_EMPTY_LIST: &[&str] = &["null", "[]"];
const NULL_OR_EMPTY_MAP: &[&str] = &["null", "{}"];
const NULL_OR_FALSE: &[&str] = &["null", "false"];

const USER: &[Foreign] = &[Foreign::Neutral("avatar_url", NULL), Foreign::Neutral("source", &["null", "\"Local\""])];

impl GpuStackBody for UserCreate {
    const FOREIGN: &'static [Foreign] = USER;
}

impl GpuStackBody for UserUpdate {
    const FOREIGN: &'static [Foreign] = USER;
}

/// What GPUStack's `UserPublic` carries that our users do not store, as GPUStack answers it for a
/// local user: what a user who sends their own object back sends.
pub const USER_PUBLIC: &[(&str, &str)] = &[
    ("avatar_url", "null"),
    ("source", "\"Local\""),
    ("is_system", "false"),
    ("role", "null"),
    ("cluster_id", "null"),
    ("worker_id", "null"),
];

/// A user editing themselves may send back what they read (GPUStack's UI and SDK send the whole
/// object), but not change who they are or what they may do.
impl GpuStackBody for UserSelfUpdate {
    const FOREIGN: &'static [Foreign] = &[
        Foreign::Neutral("avatar_url", NULL),
        Foreign::Unchanged("username"),
        Foreign::Unchanged("is_admin"),
        Foreign::Unchanged("is_active"),
        Foreign::Unchanged("require_password_change"),
        Foreign::Unchanged("source"),
        Foreign::Unchanged("is_system"),
        Foreign::Unchanged("role"),
        Foreign::Unchanged("cluster_id"),
        Foreign::Unchanged("worker_id"),
    ];
}

const VERSION_CONFIG: &[Foreign] = &[Foreign::ReadOnly("source_name"), Foreign::ReadOnly("source_type")];

impl GpuStackBody for InferenceBackendSpec {
    const FOREIGN: &'static [Foreign] = &[
        Foreign::ReadOnly("source_name"),
        Foreign::ReadOnly("source_type"),
        Foreign::ReadOnly("built_in_version_configs"),
        Foreign::ReadOnly("framework_index_map"),
        // Ours: what a save answered (engines without a key); a client sending it back is fine.
        Foreign::ReadOnly("warnings"),
    ];
    const NESTED: &'static [(&'static str, Nesting, &'static [Foreign])] =
        &[("version_configs", Nesting::Map, VERSION_CONFIG)];
    /// Null means "always ready" here; absent means the default path.
    const KEEP_NULL: &'static [&'static str] = &["health_check_path"];
}

impl GpuStackBody for ModelSpec {
    const FOREIGN: &'static [Foreign] = &[
        Foreign::ReadOnly("role_status"),
        Foreign::ReadOnly("stale"),
        Foreign::ReadOnly("degradations"),
        Foreign::ReadOnly("restarting_since"),
        Foreign::ReadOnly("has_stale_lora_instances"),
        Foreign::ReadOnly("distributable"),
        Foreign::Neutral("native_anthropic_api", NULL_OR_FALSE),
        Foreign::Neutral("gpu_type_selector", NULL),
        Foreign::Disabled("speculative_config"),
        Foreign::Neutral("lora_list", NULL_OR_EMPTY_LIST),
        Foreign::Neutral("roles", NULL_OR_EMPTY_LIST),
        Foreign::Neutral("disaggregation", NULL),
        Foreign::Neutral("gather", NULL),
        Foreign::Neutral("revision_history_limit", &["null", "10"]),
    ];
    const NESTED: &'static [(&'static str, Nesting, &'static [Foreign])] = &[
        (
            "extended_kv_cache",
            Nesting::Object,
            &[Foreign::Neutral("mode", &["null", "\"local\""]), Foreign::Neutral("cache_service_id", NULL)],
        ),
        ("gpu_selector", Nesting::Object, &[]),
    ];
}

const WORKER_READ_ONLY: &[Foreign] = &[
    Foreign::ReadOnly("cluster_id"),
    Foreign::ReadOnly("hostname"),
    Foreign::ReadOnly("ip"),
    Foreign::ReadOnly("ifname"),
    Foreign::ReadOnly("port"),
    Foreign::ReadOnly("advertise_address"),
    Foreign::ReadOnly("metrics_port"),
    Foreign::ReadOnly("runtime"),
    Foreign::ReadOnly("state"),
    Foreign::ReadOnly("state_message"),
    Foreign::ReadOnly("heartbeat_time"),
    Foreign::ReadOnly("status"),
    Foreign::ReadOnly("unreachable"),
    Foreign::ReadOnly("worker_version"),
    Foreign::ReadOnly("worker_uuid"),
    Foreign::ReadOnly("machine_id"),
    Foreign::ReadOnly("external_id"),
    Foreign::ReadOnly("provider"),
    Foreign::ReadOnly("proxy_mode"),
    Foreign::ReadOnly("proxy_address"),
    Foreign::ReadOnly("worker_pool_id"),
    Foreign::ReadOnly("ssh_key_id"),
    Foreign::ReadOnly("provider_config"),
    Foreign::ReadOnly("provision_progress"),
    Foreign::ReadOnly("me"),
    Foreign::ReadOnly("gpus"),
    Foreign::ReadOnly("simulated"),
    Foreign::Neutral("system_reserved", NULL),
];

impl GpuStackBody for WorkerUpdate {
    const FOREIGN: &'static [Foreign] = WORKER_READ_ONLY;
}

const API_KEY: &[Foreign] = &[
    Foreign::ReadOnly("user_id"),
    Foreign::ReadOnly("user_name"),
    Foreign::ReadOnly("access_key"),
    Foreign::ReadOnly("value"),
    Foreign::ReadOnly("masked_value"),
    Foreign::ReadOnly("is_custom"),
    Foreign::ReadOnly("expires_at"),
    Foreign::Neutral("custom", NULL_OR_FALSE),
];

impl GpuStackBody for ApiKeyCreate {
    const FOREIGN: &'static [Foreign] = API_KEY;
}

impl GpuStackBody for ApiKeyUpdate {
    const FOREIGN: &'static [Foreign] = &[
        Foreign::ReadOnly("user_id"),
        Foreign::ReadOnly("user_name"),
        Foreign::ReadOnly("access_key"),
        Foreign::ReadOnly("value"),
        Foreign::ReadOnly("masked_value"),
        Foreign::ReadOnly("is_custom"),
        Foreign::ReadOnly("expires_at"),
        Foreign::ReadOnly("expires_in"),
        Foreign::ReadOnly("name"),
        Foreign::Neutral("custom", NULL_OR_FALSE),
    ];
}

const CLUSTER: &[Foreign] = &[
    Foreign::ReadOnly("state"),
    Foreign::ReadOnly("state_message"),
    Foreign::ReadOnly("reported_gateway_endpoint"),
    Foreign::ReadOnly("is_default"),
    Foreign::ReadOnly("workers"),
    Foreign::ReadOnly("ready_workers"),
    Foreign::ReadOnly("gpus"),
    Foreign::ReadOnly("models"),
    Foreign::ReadOnly("token_hint"),
    Foreign::ReadOnly("token_nonce"),
    Foreign::Neutral("gateway_endpoint", NULL),
    Foreign::Neutral("server_url", NULL),
    Foreign::Neutral("system_default_container_registry", NULL),
    Foreign::Neutral("worker_config", NULL),
    Foreign::Neutral("k8s_options", NULL),
    Foreign::Neutral("topology", NULL),
    Foreign::Neutral("provider", &["null", "\"Docker\""]),
    Foreign::Neutral("credential_id", NULL),
    Foreign::Neutral("region", NULL),
    Foreign::Neutral("worker_pools", NULL_OR_EMPTY_LIST),
];

impl GpuStackBody for ClusterCreate {
    const FOREIGN: &'static [Foreign] = CLUSTER;
}

impl GpuStackBody for ClusterUpdate {
    const FOREIGN: &'static [Foreign] = CLUSTER;
}

const ROUTE_TARGET: &[Foreign] = &[
    Foreign::ReadOnly("route_id"),
    Foreign::ReadOnly("route_name"),
    Foreign::ReadOnly("state"),
    Foreign::Neutral("provider_id", NULL),
    Foreign::Neutral("max_running_requests", NULL),
    Foreign::Neutral("plugins", NULL_OR_EMPTY_MAP),
];

impl GpuStackBody for ModelRouteCreate {
    const FOREIGN: &'static [Foreign] = &[
        Foreign::ReadOnly("created_model_id"),
        Foreign::ReadOnly("ready_targets"),
        Foreign::ReadOnly("effective_name"),
        Foreign::Neutral("plugins", NULL_OR_EMPTY_MAP),
        Foreign::Neutral("lb_mode", NULL),
    ];
    const NESTED: &'static [(&'static str, Nesting, &'static [Foreign])] = &[("targets", Nesting::List, ROUTE_TARGET)];
}

impl GpuStackBody for ModelRouteTargetCreate {
    const FOREIGN: &'static [Foreign] = ROUTE_TARGET;
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use serde_json::json;

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Body {
        name: String,
        #[serde(default = "three")]
        replicas: u32,
        #[serde(default)]
        description: Option<String>,
    }

    fn three() -> u32 {
        3
    }

    impl GpuStackBody for Body {
        const FOREIGN: &'static [Foreign] = &[
            Foreign::ReadOnly("state"),
            Foreign::Neutral("speculative_config", &["null"]),
            Foreign::Neutral("access_policy", &["null", "\"authed\""]),
        ];
    }

    fn read(body: Value) -> Result<(Body, Normalized), String> {
        let mut body = body;
        let n = normalize::<Body>(&mut body).map_err(|r| format!("refused {}", r.field))?;
        serde_json::from_value(body).map(|b| (b, n)).map_err(|e| format!("serde {e}"))
    }

    #[test]
    fn field_names_come_from_serde() {
        assert_eq!(field_names::<Body>(), &["name", "replicas", "description"]);
        assert!(field_names::<String>().is_empty());
    }

    #[test]
    fn privileged_fields_pass_only_unchanged() {
        let current = json!({"id": 2, "username": "ann", "is_admin": false, "is_active": true,
                             "require_password_change": false, "source": "Local", "role": null});
        // (body, refused field or None); what passes keeps only the fields the type reads.
        let cases: &[(Value, Option<&str>)] = &[
            (json!({"full_name": "Ann"}), None),
            (json!({"full_name": "Ann", "is_admin": false, "is_active": true, "username": "ann"}), None),
            (json!({"is_admin": null, "role": null, "source": "Local", "require_password_change": false}), None),
            (json!({"full_name": "Ann", "id": 2, "created_at": "x", "avatar_url": null}), None),
            (json!({"is_admin": true}), Some("is_admin")),
            (json!({"full_name": "Ann", "is_active": false}), Some("is_active")),
            (json!({"username": "root"}), Some("username")),
            (json!({"require_password_change": true}), Some("require_password_change")),
            (json!({"role": "Worker"}), Some("role")),
            (json!({"source": "OIDC"}), Some("source")),
            (json!({"is_admin": "true"}), Some("is_admin")),
        ];
        for (body, refused) in cases {
            let mut body = body.clone();
            let got = check_unchanged::<UserSelfUpdate>(&mut body, &current)
                .and_then(|()| normalize::<UserSelfUpdate>(&mut body).map(|_| ()));
            match (got, refused) {
                (Ok(()), None) => {
                    let update: UserSelfUpdate = serde_json::from_value(body.clone()).expect("reads");
                    assert!(update.full_name.is_none() || update.full_name.as_deref() == Some("Ann"), "{body}");
                }
                (Err(r), Some(field)) => {
                    assert_eq!(r.field, *field, "{body}");
                    assert!(r.message.contains("may not be changed here"), "{}", r.message);
                }
                (got, want) => panic!("{body}: got {got:?}, want refused {want:?}"),
            }
        }
        // Without the check (a handler that does not know the row) a privileged field is refused.
        let mut unchecked = json!({"full_name": "Ann", "is_admin": false});
        assert_eq!(normalize::<UserSelfUpdate>(&mut unchecked).expect_err("refused").field, "is_admin");
    }

    #[test]
    fn a_null_that_means_something_stays() {
        let mut body = json!({"backend_name": "x-custom", "health_check_path": null, "id": 3});
        normalize::<InferenceBackendSpec>(&mut body).expect("normalized");
        assert_eq!(body, json!({"backend_name": "x-custom", "health_check_path": null}));
        let spec: InferenceBackendSpec = serde_json::from_value(body).expect("spec");
        assert_eq!(spec.health_check_path, None, "null = always ready");
    }

    #[test]
    fn table() {
        let ok = |b: Value| read(b).expect("accepted").0;
        // null = default, for our own fields
        assert_eq!(ok(json!({"name": "a", "replicas": null})).replicas, 3);
        // read-only fields, common and the type's own, in any value
        assert_eq!(ok(json!({"name": "a", "id": 7, "created_at": "x", "state": "running"})).name, "a");
        // GPUStack-only fields holding a neutral value
        assert_eq!(ok(json!({"name": "a", "speculative_config": null, "access_policy": "authed"})).name, "a");
        // a version the type does not have becomes the update guard
        assert_eq!(read(json!({"name": "a", "version": 4})).expect("ok").1.version, Some(4));
        let refused = [
            (json!({"name": "a", "speculative_config": {"enabled": true}}), "refused speculative_config"),
            (json!({"name": "a", "access_policy": "public"}), "refused access_policy"),
            (json!({"name": "a", "version": "x"}), "refused version"),
        ];
        for (body, want) in refused {
            assert_eq!(read(body.clone()).expect_err("refused"), want, "{body}");
        }
        // a typo is still a typo; a wrong type still a type error
        assert!(read(json!({"name": "a", "replicsa": 2})).expect_err("unknown").contains("unknown field"));
        assert!(read(json!({"name": "a", "replicas": "x"})).expect_err("type").contains("invalid type"));
        // a null name is a missing name, not an empty one
        assert!(read(json!({"name": null})).expect_err("missing").contains("missing field"));
    }
}
