//! The patch types kubectl and kube send: JSON merge patch (RFC 7386), JSON patch (RFC 6902)
//! and strategic merge patch. The strategic merge here covers what the resources Gantry
//! touches need: lists of objects with a `name` (containers, env, volumes, ...) merge by name,
//! `$patch: delete` removes an element, other lists are replaced, `null` deletes a key.

use serde_json::Value;

use super::store::ApiErr;

pub fn apply(content_type: &str, target: &mut Value, body: &[u8]) -> Result<(), ApiErr> {
    let patch: Value =
        serde_json::from_slice(body).map_err(|e| ApiErr::bad(format!("patch is not JSON: {e}")))?;
    match content_type.split(';').next().unwrap_or("").trim() {
        "application/merge-patch+json" => {
            json_patch::merge(target, &patch);
            Ok(())
        }
        "application/json-patch+json" => {
            let ops: json_patch::Patch = serde_json::from_value(patch)
                .map_err(|e| ApiErr::bad(format!("invalid JSON patch: {e}")))?;
            json_patch::patch(target, &ops).map_err(|e| ApiErr {
                code: 422,
                reason: "Invalid",
                message: format!("the JSON patch does not apply: {e}"),
            })
        }
        "application/strategic-merge-patch+json" => {
            strategic(target, &patch);
            Ok(())
        }
        other => Err(ApiErr {
            code: 415,
            reason: "UnsupportedMediaType",
            message: format!(
                "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json (got {other:?})"
            ),
        }),
    }
}

pub fn strategic(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(serde_json::Map::new());
    }
    let Value::Object(map) = target else { return };
    for (key, value) in patch {
        if key.starts_with('$') {
            continue;
        }
        match value {
            Value::Null => {
                map.remove(key);
            }
            Value::Object(_) => strategic(map.entry(key.clone()).or_insert(Value::Null), value),
            Value::Array(items)
                if items.iter().all(|i| i.get("name").is_some()) && !items.is_empty() =>
            {
                let existing = map.entry(key.clone()).or_insert(Value::Array(Vec::new()));
                if !existing.is_array() {
                    *existing = Value::Array(Vec::new());
                }
                let Value::Array(list) = existing else {
                    continue;
                };
                for item in items {
                    let name = item.get("name").cloned();
                    let position = list.iter().position(|e| e.get("name") == name.as_ref());
                    let delete = item.get("$patch").and_then(Value::as_str) == Some("delete");
                    match (position, delete) {
                        (Some(i), true) => {
                            list.remove(i);
                        }
                        (Some(i), false) => strategic(&mut list[i], item),
                        (None, false) => {
                            let mut fresh = Value::Null;
                            strategic(&mut fresh, item);
                            list.push(fresh);
                        }
                        (None, true) => {}
                    }
                }
            }
            other => {
                map.insert(key.clone(), other.clone());
            }
        }
    }
}
