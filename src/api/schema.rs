//! The OpenAPI schema of [`Record`], written by hand so that each resource gets its own.
//!
//! Every resource type is an alias of `Record<…Spec>` (`Worker = Record<WorkerSpec>`). A derived
//! schema would be named `Record` whatever the spec, so every operation answering a resource would
//! point at one shared schema (whichever was registered last). Here the name comes from the spec:
//! `Record<WorkerSpec>` is `Worker`, `Record<UserSpec>` is `User`, and the schema is the spec's
//! fields together with the metadata.

use std::borrow::Cow;

use utoipa::openapi::schema::{AllOfBuilder, ObjectBuilder, Schema, Type};
use utoipa::openapi::{KnownFormat, Ref, RefOr, SchemaFormat};
use utoipa::{PartialSchema, ToSchema};

use super::Record;

/// The schema name of `Record<T>` for a spec named `name`: `WorkerSpec` → `Worker`; a name without
/// the suffix is kept apart from its own schema (`Thing` → `ThingRecord`).
pub fn record_name(name: &str) -> String {
    match name.strip_suffix("Spec") {
        Some(resource) if !resource.is_empty() => resource.to_owned(),
        _ => format!("{name}Record"),
    }
}

impl<T: ToSchema> PartialSchema for Record<T> {
    fn schema() -> RefOr<Schema> {
        let typed = |kind: Type, format: KnownFormat| {
            ObjectBuilder::new().schema_type(kind).format(Some(SchemaFormat::KnownFormat(format)))
        };
        let metadata = ObjectBuilder::new()
            .property("id", typed(Type::Integer, KnownFormat::Int64))
            .property(
                "version",
                typed(Type::Integer, KnownFormat::Int64).description(Some(
                    "Optimistic-concurrency version; send it back on update to get 409 instead of a lost update.",
                )),
            )
            .property("created_at", typed(Type::String, KnownFormat::DateTime))
            .property("updated_at", typed(Type::String, KnownFormat::DateTime))
            .required("id")
            .required("version")
            .required("created_at")
            .required("updated_at");
        AllOfBuilder::new()
            .item(Ref::from_schema_name(T::name()))
            .item(metadata)
            .description(Some("A stored resource: metadata plus the resource's own fields."))
            .into()
    }
}

impl<T: ToSchema> ToSchema for Record<T> {
    fn name() -> Cow<'static, str> {
        Cow::Owned(record_name(&T::name()))
    }

    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        schemas.push((T::name().into_owned(), T::schema()));
        T::schemas(schemas);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{ApiKeySpec, ModelInstanceSpec, UserSpec, WorkerSpec};

    #[test]
    fn each_resource_has_its_own_schema() {
        let cases = [
            (Record::<UserSpec>::name(), "User", "UserSpec"),
            (Record::<WorkerSpec>::name(), "Worker", "WorkerSpec"),
            (Record::<ModelInstanceSpec>::name(), "ModelInstance", "ModelInstanceSpec"),
            (Record::<ApiKeySpec>::name(), "ApiKey", "ApiKeySpec"),
        ];
        for (got, want, spec) in cases {
            assert_eq!(got, want);
            let mut registered = Vec::new();
            match spec {
                "UserSpec" => Record::<UserSpec>::schemas(&mut registered),
                "WorkerSpec" => Record::<WorkerSpec>::schemas(&mut registered),
                "ModelInstanceSpec" => Record::<ModelInstanceSpec>::schemas(&mut registered),
                _ => Record::<ApiKeySpec>::schemas(&mut registered),
            }
            assert!(registered.iter().any(|(name, _)| name == spec), "{want} registers {spec}");
        }
        assert_eq!(record_name("Spec"), "SpecRecord");
        assert_eq!(record_name("Thing"), "ThingRecord");
        let schema = serde_json::to_value(Record::<WorkerSpec>::schema()).unwrap();
        assert_eq!(schema["allOf"][0]["$ref"], "#/components/schemas/WorkerSpec", "{schema}");
        assert_eq!(schema["allOf"][1]["required"], serde_json::json!(["id", "version", "created_at", "updated_at"]));
    }
}
