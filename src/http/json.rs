//! `JsonBody<T>`: the request payload every JSON operation takes. Same wire format and schema as
//! poem-openapi's `Json<T>`, but a body that does not fit says which field is wrong:
//! `field `times`: expected integer (uint8)` or `missing field `email``, not only the type name.

use poem::{FromRequest, Request, RequestBody, Result};
use poem_openapi::error::{ContentTypeError, ParseRequestPayloadError};
use poem_openapi::payload::{ParsePayload, Payload};
use poem_openapi::registry::{MetaMediaType, MetaRequest, MetaSchema, MetaSchemaRef, Registry};
use poem_openapi::types::{ParseFromJSON, Type};
use poem_openapi::{ApiExtractor, ApiExtractorType, ExtractParamOptions};
use serde_json::Value;

/// A JSON request body.
#[derive(Debug, Clone)]
pub struct JsonBody<T>(pub T);

/// The property names of `T`'s object schema (empty when `T` is not an object), worked out once
/// per type.
fn known_fields<T: Type + 'static>() -> std::sync::Arc<Vec<&'static str>> {
    use std::any::TypeId;
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex, OnceLock};
    type Fields = Arc<Vec<&'static str>>;
    static CACHE: OnceLock<Mutex<HashMap<TypeId, Fields>>> = OnceLock::new();
    let cache = CACHE.get_or_init(|| Mutex::new(HashMap::new()));
    let id = TypeId::of::<T>();
    if let Some(found) = cache.lock().ok().and_then(|m| m.get(&id).cloned()) {
        return found;
    }
    let mut registry = Registry::new();
    T::register(&mut registry);
    let root = T::schema_ref();
    let fields: Fields = Arc::new(
        resolve(&registry, &root).map(|s| s.properties.iter().map(|(name, _)| *name).collect()).unwrap_or_default(),
    );
    if let Ok(mut m) = cache.lock() {
        m.insert(id, fields.clone());
    }
    fields
}

impl<T: Type> Payload for JsonBody<T> {
    const CONTENT_TYPE: &'static str = "application/json; charset=utf-8";

    fn check_content_type(content_type: &str) -> bool {
        matches!(content_type.parse::<mime::Mime>(), Ok(m) if m.type_() == "application"
            && (m.subtype() == "json" || m.suffix().is_some_and(|s| s == "json")))
    }

    fn schema_ref() -> MetaSchemaRef {
        T::schema_ref()
    }

    fn register(registry: &mut Registry) {
        T::register(registry);
    }
}

impl<T: ParseFromJSON + 'static> ParsePayload for JsonBody<T> {
    const IS_REQUIRED: bool = T::IS_REQUIRED;

    async fn from_request(request: &Request, body: &mut RequestBody) -> Result<Self> {
        let data = <Vec<u8> as FromRequest>::from_request(request, body).await?;
        let value = if data.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&data)
                .map_err(|e| ParseRequestPayloadError { reason: format!("malformed JSON: {e}") })?
        };
        // No request field is nullable: an explicit `null` for one is refused rather than read as
        // absent. Members the schema does not name are ignored, null or not.
        let known = known_fields::<T>();
        if let Some(field) = value
            .as_object()
            .and_then(|o| o.iter().find(|(k, v)| v.is_null() && known.iter().any(|f| f == k)))
            .map(|(k, _)| k)
        {
            return Err(ParseRequestPayloadError {
                reason: format!("field `{field}` must not be null; omit it instead"),
            }
            .into());
        }
        // Checked against the schema first: poem-openapi reads `false` or `3` into a string
        // field as "false" or "3", and a client that sends the wrong type should hear about it.
        if let Some(reason) = explain::<T>(&value) {
            return Err(ParseRequestPayloadError { reason }.into());
        }
        match T::parse_from_json(Some(value)) {
            Ok(v) => Ok(Self(v)),
            Err(err) => Err(ParseRequestPayloadError { reason: err.into_message() }.into()),
        }
    }
}

impl<'a, T: ParseFromJSON + 'static> ApiExtractor<'a> for JsonBody<T> {
    const TYPES: &'static [ApiExtractorType] = &[ApiExtractorType::RequestObject];
    type ParamType = ();
    type ParamRawType = ();

    fn register(registry: &mut Registry) {
        <Self as Payload>::register(registry);
    }

    fn request_meta() -> Option<MetaRequest> {
        Some(MetaRequest {
            description: None,
            content: vec![MetaMediaType {
                content_type: <Self as Payload>::CONTENT_TYPE,
                schema: <Self as Payload>::schema_ref(),
            }],
            required: <Self as ParsePayload>::IS_REQUIRED,
        })
    }

    async fn from_request(
        request: &'a Request,
        body: &mut RequestBody,
        _param_opts: ExtractParamOptions<Self::ParamType>,
    ) -> Result<Self> {
        match request.content_type() {
            Some(ct) if <Self as Payload>::check_content_type(ct) => {
                <Self as ParsePayload>::from_request(request, body).await
            }
            Some(ct) => Err(ContentTypeError::NotSupported { content_type: ct.to_string() }.into()),
            None => Err(ContentTypeError::ExpectContentType.into()),
        }
    }
}

/// Name the first field of `value` that does not fit `T`'s schema, with its path
/// (`rules[2].effect`).
fn explain<T: Type + 'static>(value: &Value) -> Option<String> {
    let (registry, root) = schema_of::<T>();
    let schema = resolve(registry, root)?;
    if !value.is_object() {
        return Some(format!("expected a JSON object, found {}", kind(value)));
    }
    explain_object(registry, schema, value, "")
}

/// `T`'s schemas, registered once per type and kept for the life of the process (one entry per
/// request body type).
fn schema_of<T: Type + 'static>() -> &'static (Registry, MetaSchemaRef) {
    use std::any::TypeId;
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};
    type Entry = &'static (Registry, MetaSchemaRef);
    static CACHE: OnceLock<Mutex<HashMap<TypeId, Entry>>> = OnceLock::new();
    let cache = CACHE.get_or_init(|| Mutex::new(HashMap::new()));
    let id = TypeId::of::<T>();
    let mut map = cache.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(found) = map.get(&id) {
        return found;
    }
    let mut registry = Registry::new();
    T::register(&mut registry);
    let entry: Entry = Box::leak(Box::new((registry, T::schema_ref())));
    map.insert(id, entry);
    entry
}

fn explain_object(registry: &Registry, schema: &MetaSchema, value: &Value, path: &str) -> Option<String> {
    let Value::Object(obj) = value else { return None };
    for name in &schema.required {
        if obj.get(*name).is_none_or(Value::is_null) {
            return Some(format!("missing field `{path}{name}`"));
        }
    }
    for (name, field_ref) in &schema.properties {
        let Some(v) = obj.get(*name) else { continue };
        let field = resolve(registry, field_ref)?;
        let at = format!("{path}{name}");
        if let Some(problem) = explain_value(registry, field, v, &at) {
            return Some(problem);
        }
    }
    None
}

/// Why `v` (at `at`) does not fit `schema`, looking into lists and objects.
fn explain_value(registry: &Registry, schema: &MetaSchema, v: &Value, at: &str) -> Option<String> {
    if let Some(problem) = mismatch(schema, v) {
        return Some(format!("field `{at}`: {problem}"));
    }
    match v {
        Value::Array(items) => {
            if schema.max_items.is_some_and(|m| items.len() > m) || schema.min_items.is_some_and(|m| items.len() < m) {
                return Some(format!("field `{at}`: {} items is outside the allowed range", items.len()));
            }
            let item_schema = schema.items.as_deref().and_then(|r| resolve(registry, r))?;
            items.iter().enumerate().find_map(|(i, x)| explain_value(registry, item_schema, x, &format!("{at}[{i}]")))
        }
        Value::Object(_) if !schema.properties.is_empty() => explain_object(registry, schema, v, &format!("{at}.")),
        _ => None,
    }
}

fn resolve<'r>(registry: &'r Registry, r: &'r MetaSchemaRef) -> Option<&'r MetaSchema> {
    match r {
        MetaSchemaRef::Inline(s) => Some(s),
        MetaSchemaRef::Reference(name) => registry.schemas.get(name),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Why `v` does not fit `schema`, for the common cases (type, integer range, length, enum).
fn mismatch(schema: &MetaSchema, v: &Value) -> Option<String> {
    if v.is_null() && schema.nullable {
        return None;
    }
    let expected = match schema.format {
        Some(f) => format!("{} ({f})", schema.ty),
        None => schema.ty.to_string(),
    };
    let type_ok = match schema.ty {
        "integer" => v.as_i64().is_some() || v.as_u64().is_some(),
        "number" => v.is_number(),
        "string" => v.is_string(),
        "boolean" => v.is_boolean(),
        "array" => v.is_array(),
        "object" => v.is_object(),
        _ => true,
    };
    if !type_ok {
        return Some(format!("expected {expected}, found {}", kind(v)));
    }
    if let Some(n) = v.as_f64() {
        let range = match schema.format {
            Some("uint8") => Some((0.0, f64::from(u8::MAX))),
            Some("uint16") => Some((0.0, f64::from(u16::MAX))),
            Some("uint32") => Some((0.0, f64::from(u32::MAX))),
            Some("int8") => Some((f64::from(i8::MIN), f64::from(i8::MAX))),
            Some("int16") => Some((f64::from(i16::MIN), f64::from(i16::MAX))),
            Some("int32") => Some((f64::from(i32::MIN), f64::from(i32::MAX))),
            Some("uint64") => Some((0.0, f64::MAX)),
            _ => None,
        };
        let (lo, hi) = range.unwrap_or((f64::MIN, f64::MAX));
        let lo = schema.minimum.unwrap_or(lo).max(lo);
        let hi = schema.maximum.unwrap_or(hi).min(hi);
        if n < lo || n > hi {
            return Some(format!("{n} is out of range for {expected}"));
        }
    }
    if let Some(s) = v.as_str() {
        let len = s.chars().count();
        if schema.max_length.is_some_and(|m| len > m) || schema.min_length.is_some_and(|m| len < m) {
            return Some(format!("length {len} is outside the allowed range"));
        }
    }
    if !schema.enum_items.is_empty() && !schema.enum_items.contains(v) {
        return Some("not one of the allowed values".to_string());
    }
    None
}
