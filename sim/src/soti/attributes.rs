//! Device custom attributes of the SOTI simulator: the definitions
//! (`GET /api/customattributes`, the spec's `CustomAttribute`) and the values
//! per device (`GET|PUT /api/devices/{id}/customAttributes`, the spec's
//! `CustomAttributeInfo` and `CustomAttributeParameters`), which the
//! connector uses as its risk signal (`MDM-APIS.md`, SOTI "Risk signal").
//!
//! What the spec leaves open, and the simulator's choices (**\[ours\]**):
//! - the `PUT` answers 200 with an **empty** body (the spec's 200 is a
//!   nullable "file");
//! - a name that no definition has → 400 with SOTI's error JSON (`ErrorCode`
//!   0, `ErrorMessage` `Custom attribute 'X' does not exist.`, `Data`
//!   `["X"]`), and nothing of that request is written (all or nothing);
//! - a value that does not fit the definition's type (an `Enumerator`
//!   value not among its `EnumValues`, a `Numeric` that is no number, a
//!   `Boolean` that is not `true`/`false`) → 400 likewise; `Text`, `Date`
//!   and `DateTime` take any text; `"AttributeValue": null` clears it;
//! - names are matched ignoring case (MobiControl keeps them in a
//!   case-insensitive database) and stored as the definition spells them;
//! - the `GET` of a device lists **every** definition (the spec: "a list of
//!   values for each globally configured custom attribute"), `Value` `null`
//!   where nothing is set, `IsInherited` `false`.
//!
//! Every `PUT` is recorded as one [`RecordedAction`] per attribute in its
//! body, named `SetCustomAttribute:{Name}={Value}` (`ClearCustomAttribute:{Name}`
//! for a `null` value) with the status answered; a body that names none is
//! recorded once as `SetCustomAttribute`.
//!
//! Seeded: one definition, `MTD_Threat_Level` of type `Text` (what the
//! connector writes by default), and `Cost_Center`, an `Enumerator`, so a
//! device's list has more than the one the connector looks for.

use std::collections::HashMap;

use axum::{
    body::Bytes,
    extract::{Path, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    Json,
};
use chrono::Utc;
use serde_json::{json, Map, Value};

use super::{device_id_of, device_not_found, soti_error, Authorized, SotiState};
use crate::{
    core::{json_body, ControlError, RecordedAction},
    util::{percent_decode, read, write},
    SimKind,
};

/// The spec's `CustomAttributeDataType`.
pub const DATA_TYPES: &[&str] = &[
    "Boolean",
    "Numeric",
    "Text",
    "DateTime",
    "Enumerator",
    "Date",
];

/// The custom attribute the connector writes by default, seeded as `Text`.
pub const RISK_ATTRIBUTE: &str = "MTD_Threat_Level";

/// The definitions and the values set per device.
#[derive(Debug)]
pub(crate) struct CustomAttributes {
    /// `CustomAttribute` objects, in creation order.
    definitions: Vec<Value>,
    /// Per device (its `DeviceId` lower-cased), attribute name (as defined)
    /// → value.
    values: HashMap<String, Vec<(String, String)>>,
}

fn name_of(definition: &Value) -> &str {
    definition
        .get("Name")
        .and_then(Value::as_str)
        .unwrap_or_default()
}

fn type_of(definition: &Value) -> &str {
    definition
        .get("CustomAttributeDataType")
        .and_then(Value::as_str)
        .unwrap_or("Text")
}

fn definition(name: &str, data_type: &str, enum_values: &[&str]) -> Value {
    json!({
        "Name": name,
        "CustomAttributeDataType": data_type,
        "EnumValues": enum_values,
        "PropagateToDevice": false,
        "ReferenceId": super::reference_id(&format!("customattribute:{name}")),
    })
}

impl CustomAttributes {
    pub(crate) fn seeded() -> Self {
        Self {
            definitions: vec![
                definition(RISK_ATTRIBUTE, "Text", &[]),
                definition(
                    "Cost_Center",
                    "Enumerator",
                    &["Sales", "Engineering", "Support"],
                ),
            ],
            values: HashMap::new(),
        }
    }

    fn find(&self, name: &str) -> Option<usize> {
        let name = name.trim();
        self.definitions
            .iter()
            .position(|d| name_of(d).eq_ignore_ascii_case(name))
    }

    /// Checks `value` against the definition; `Err` says why not.
    fn check(definition: &Value, value: &str) -> Result<(), String> {
        let name = name_of(definition);
        let ok = match type_of(definition) {
            "Enumerator" => definition
                .get("EnumValues")
                .and_then(Value::as_array)
                .is_some_and(|values| {
                    values
                        .iter()
                        .any(|v| v.as_str().is_some_and(|v| v.eq_ignore_ascii_case(value)))
                }),
            "Numeric" => value.trim().parse::<f64>().is_ok(),
            "Boolean" => matches!(value.trim().to_ascii_lowercase().as_str(), "true" | "false"),
            _ => true,
        };
        if ok {
            Ok(())
        } else {
            Err(format!(
                "The value '{value}' is not valid for the custom attribute '{name}' of type {}.",
                type_of(definition)
            ))
        }
    }

    fn set(&mut self, device_id: &str, name: &str, value: Option<&str>) {
        let list = self.values.entry(device_id.to_lowercase()).or_default();
        list.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
        if let Some(value) = value {
            list.push((name.to_owned(), value.to_owned()));
        }
    }

    fn value(&self, device_id: &str, name: &str) -> Option<String> {
        self.values
            .get(&device_id.to_lowercase())?
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    }

    /// The device's `CustomAttributeInfo` list: every definition.
    fn infos(&self, device_id: &str) -> Vec<Value> {
        self.definitions
            .iter()
            .map(|d| {
                let name = name_of(d);
                json!({
                    "Name": name,
                    "OriginName": name,
                    "Value": self.value(device_id, name),
                    "DataType": type_of(d),
                    "IsInherited": false,
                })
            })
            .collect()
    }

    pub(crate) fn forget_device(&mut self, device_id: &str) {
        self.values.remove(&device_id.to_lowercase());
    }
}

impl SotiState {
    /// The custom attribute definitions (`CustomAttribute` objects), as
    /// `GET /api/customattributes` lists them.
    pub fn custom_attribute_definitions(&self) -> Vec<Value> {
        read(&self.attributes).definitions.clone()
    }

    /// Defines a custom attribute of `data_type` (one of [`DATA_TYPES`]);
    /// an `Enumerator` takes `enum_values`.
    pub fn define_custom_attribute(
        &self,
        name: &str,
        data_type: &str,
        enum_values: &[&str],
    ) -> Result<(), ControlError> {
        let name = name.trim();
        if name.is_empty() {
            return Err(ControlError::Invalid(
                "a custom attribute needs a name".into(),
            ));
        }
        let Some(data_type) = DATA_TYPES
            .iter()
            .find(|t| t.eq_ignore_ascii_case(data_type.trim()))
        else {
            return Err(ControlError::Invalid(format!(
                "unknown data type `{data_type}`, expected one of {}",
                DATA_TYPES.join(", ")
            )));
        };
        let mut attributes = write(&self.attributes);
        if attributes.find(name).is_some() {
            return Err(ControlError::Conflict(format!(
                "custom attribute {name} exists"
            )));
        }
        attributes
            .definitions
            .push(definition(name, data_type, enum_values));
        Ok(())
    }

    /// Deletes a definition and its value on every device (as MobiControl
    /// does); `false` when there was none.
    pub fn remove_custom_attribute(&self, name: &str) -> bool {
        let mut attributes = write(&self.attributes);
        let Some(i) = attributes.find(name) else {
            return false;
        };
        let removed = attributes.definitions.remove(i);
        let removed = name_of(&removed).to_owned();
        for list in attributes.values.values_mut() {
            list.retain(|(n, _)| !n.eq_ignore_ascii_case(&removed));
        }
        true
    }

    /// Renames a definition; the values set on devices follow it.
    pub fn rename_custom_attribute(&self, from: &str, to: &str) -> Result<(), ControlError> {
        let to = to.trim();
        if to.is_empty() {
            return Err(ControlError::Invalid(
                "a custom attribute needs a name".into(),
            ));
        }
        let mut attributes = write(&self.attributes);
        let i = attributes.find(from).ok_or(ControlError::NotFound)?;
        if attributes.find(to).is_some_and(|j| j != i) {
            return Err(ControlError::Conflict(format!(
                "custom attribute {to} exists"
            )));
        }
        let old = name_of(&attributes.definitions[i]).to_owned();
        attributes.definitions[i]["Name"] = json!(to);
        for list in attributes.values.values_mut() {
            for (n, _) in list.iter_mut() {
                if n.eq_ignore_ascii_case(&old) {
                    *n = to.to_owned();
                }
            }
        }
        Ok(())
    }

    /// The value of the custom attribute `name` on the device `reference`
    /// names (`DeviceId`, `mac:…`, `imei_meid_esn:…`); `None` when unset
    /// (or no such device).
    pub fn custom_attribute(&self, reference: &str, name: &str) -> Option<String> {
        let id = device_id_of(&self.device(reference)?)?;
        read(&self.attributes).value(&id, name)
    }

    /// Every custom attribute set on a device, by name (the defined
    /// spelling); `None` when there is no such device.
    pub fn custom_attributes(&self, reference: &str) -> Option<Map<String, Value>> {
        let id = device_id_of(&self.device(reference)?)?;
        let attributes = read(&self.attributes);
        Some(
            attributes
                .infos(&id)
                .into_iter()
                .map(|info| {
                    (
                        info["Name"].as_str().unwrap_or_default().to_owned(),
                        info["Value"].clone(),
                    )
                })
                .collect(),
        )
    }

    /// Sets (`Some`) or clears (`None`) a device's value behind the API's
    /// back, as an admin in the console would: not recorded, not checked
    /// against the type. The attribute must be defined.
    pub fn set_custom_attribute(
        &self,
        reference: &str,
        name: &str,
        value: Option<&str>,
    ) -> Result<(), ControlError> {
        let id = self
            .device(reference)
            .as_ref()
            .and_then(device_id_of)
            .ok_or(ControlError::NotFound)?;
        let mut attributes = write(&self.attributes);
        let i = attributes.find(name).ok_or_else(|| {
            ControlError::Invalid(format!("custom attribute {name} is not defined"))
        })?;
        let name = name_of(&attributes.definitions[i]).to_owned();
        attributes.set(&id, &name, value);
        Ok(())
    }
}

// --------------------------------------------------------------- vendor API

/// `GET /api/customattributes`.
pub(super) async fn list_definitions(
    _: Authorized,
    State(state): State<std::sync::Arc<SotiState>>,
) -> Response {
    Json(state.custom_attribute_definitions()).into_response()
}

/// `GET /api/devices/{id}/customAttributes`.
pub(super) async fn device_attributes(
    _: Authorized,
    State(state): State<std::sync::Arc<SotiState>>,
    Path(id): Path<String>,
) -> Response {
    let reference = percent_decode(&id).into_owned();
    let Some(device_id) = state.device(&reference).as_ref().and_then(device_id_of) else {
        return device_not_found(&reference);
    };
    Json(read(&state.attributes).infos(&device_id)).into_response()
}

/// One `Attributes` entry of a `PUT`, as sent.
struct Update {
    name: String,
    value: Option<String>,
}

impl Update {
    fn action(&self) -> String {
        match &self.value {
            Some(v) => format!("SetCustomAttribute:{}={v}", self.name),
            None => format!("ClearCustomAttribute:{}", self.name),
        }
    }
}

/// The entries of a `CustomAttributeParameters` body; `Err` for a body that
/// is not one.
fn updates(body: &Bytes) -> Result<Vec<Update>, String> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|_| "The request body is not valid JSON.".to_owned())?;
    let Some(list) = value.get("Attributes").and_then(Value::as_array) else {
        return Err("The Attributes field is required.".into());
    };
    list.iter()
        .map(|entry| {
            let name = entry
                .get("AttributeName")
                .and_then(Value::as_str)
                .map(str::trim)
                .filter(|n| !n.is_empty())
                .ok_or_else(|| "Each attribute needs an AttributeName.".to_owned())?;
            let value = match entry.get("AttributeValue") {
                None | Some(Value::Null) => None,
                Some(Value::String(s)) => Some(s.clone()),
                Some(Value::Number(n)) => Some(n.to_string()),
                Some(Value::Bool(b)) => Some(b.to_string()),
                Some(_) => return Err(format!("The AttributeValue of '{name}' is not a value.")),
            };
            Ok(Update {
                name: name.to_owned(),
                value,
            })
        })
        .collect()
}

/// `PUT /api/devices/{id}/customAttributes`.
pub(super) async fn put_device_attributes(
    _: Authorized,
    State(state): State<std::sync::Arc<SotiState>>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let reference = percent_decode(&id).into_owned();
    let device_id = state.device(&reference).as_ref().and_then(device_id_of);
    let record = |action: String, status: StatusCode| {
        state.core.record_action(RecordedAction {
            seq: 0,
            at: Utc::now(),
            kind: SimKind::Soti,
            device_ref: reference.clone(),
            device_id: device_id.clone(),
            action,
            profile_id: None,
            body: serde_json::from_slice(&body)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into_owned())),
            status: status.as_u16(),
        });
    };
    let parsed = updates(&body);
    let record_all = |status: StatusCode| match &parsed {
        Ok(list) if !list.is_empty() => list.iter().for_each(|u| record(u.action(), status)),
        _ => record("SetCustomAttribute".into(), status),
    };
    let Some(device_id) = device_id.clone() else {
        record_all(StatusCode::NOT_FOUND);
        return device_not_found(&reference);
    };
    let list = match &parsed {
        Ok(list) => list,
        Err(message) => {
            record_all(StatusCode::BAD_REQUEST);
            return soti_error(StatusCode::BAD_REQUEST, message, vec![]);
        }
    };
    let mut attributes = write(&state.attributes);
    // Everything is checked before anything is written.
    let mut names = Vec::with_capacity(list.len());
    for update in list {
        let Some(i) = attributes.find(&update.name) else {
            drop(attributes);
            record_all(StatusCode::BAD_REQUEST);
            return soti_error(
                StatusCode::BAD_REQUEST,
                &format!("Custom attribute '{}' does not exist.", update.name),
                vec![update.name.clone()],
            );
        };
        let definition = &attributes.definitions[i];
        if let Some(Err(message)) = update
            .value
            .as_deref()
            .map(|v| CustomAttributes::check(definition, v))
        {
            drop(attributes);
            record_all(StatusCode::BAD_REQUEST);
            return soti_error(StatusCode::BAD_REQUEST, &message, vec![update.name.clone()]);
        }
        names.push(name_of(definition).to_owned());
    }
    for (update, name) in list.iter().zip(names) {
        attributes.set(&device_id, &name, update.value.as_deref());
    }
    drop(attributes);
    record_all(StatusCode::OK);
    StatusCode::OK.into_response()
}

// -------------------------------------------------------------- control API

/// `GET /_sim/soti/custom-attribute-definitions`.
pub(super) async fn control_definitions(
    State(state): State<std::sync::Arc<SotiState>>,
) -> Json<Vec<Value>> {
    Json(state.custom_attribute_definitions())
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
struct NewDefinition {
    name: String,
    #[serde(default)]
    custom_attribute_data_type: Option<String>,
    #[serde(default)]
    enum_values: Vec<String>,
}

/// `POST /_sim/soti/custom-attribute-definitions` `{"Name","CustomAttributeDataType","EnumValues"}`
/// (type `Text` when absent).
pub(super) async fn control_define(
    State(state): State<std::sync::Arc<SotiState>>,
    body: Bytes,
) -> Result<Response, ControlError> {
    let new: NewDefinition = json_body(&body)?;
    let values: Vec<&str> = new.enum_values.iter().map(String::as_str).collect();
    state.define_custom_attribute(
        &new.name,
        new.custom_attribute_data_type.as_deref().unwrap_or("Text"),
        &values,
    )?;
    Ok((
        StatusCode::CREATED,
        Json(state.custom_attribute_definitions()),
    )
        .into_response())
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
struct Rename {
    name: String,
}

/// `PATCH /_sim/soti/custom-attribute-definitions/{name}` `{"Name":"new"}`.
pub(super) async fn control_rename(
    State(state): State<std::sync::Arc<SotiState>>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<StatusCode, ControlError> {
    let rename: Rename = json_body(&body)?;
    state.rename_custom_attribute(&name, &rename.name)?;
    Ok(StatusCode::NO_CONTENT)
}

/// `DELETE /_sim/soti/custom-attribute-definitions/{name}`.
pub(super) async fn control_remove(
    State(state): State<std::sync::Arc<SotiState>>,
    Path(name): Path<String>,
) -> Result<StatusCode, ControlError> {
    if state.remove_custom_attribute(&name) {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ControlError::NotFound)
    }
}

/// `GET /_sim/soti/devices/{ref}/custom-attributes`: `{"Name": value or null}`.
pub(super) async fn control_device_attributes(
    State(state): State<std::sync::Arc<SotiState>>,
    Path(reference): Path<String>,
) -> Result<Json<Map<String, Value>>, ControlError> {
    state
        .custom_attributes(&reference)
        .map(Json)
        .ok_or(ControlError::NotFound)
}

/// `PUT /_sim/soti/devices/{ref}/custom-attributes/{name}` with a JSON
/// string (the new value) or `null` (clear): a change behind the API's back.
pub(super) async fn control_set_attribute(
    State(state): State<std::sync::Arc<SotiState>>,
    Path((reference, name)): Path<(String, String)>,
    body: Bytes,
) -> Result<StatusCode, ControlError> {
    let value: Value = json_body(&body)?;
    let value = match &value {
        Value::Null => None,
        Value::String(s) => Some(s.as_str()),
        _ => return Err(ControlError::Invalid("a JSON string or null".into())),
    };
    state.set_custom_attribute(&reference, &name, value)?;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_checked_against_the_definitions_type() {
        let text = definition("T", "Text", &[]);
        let enumerator = definition("E", "Enumerator", &["Sales", "Support"]);
        let numeric = definition("N", "Numeric", &[]);
        let boolean = definition("B", "Boolean", &[]);
        assert!(CustomAttributes::check(&text, "anything at all").is_ok());
        assert!(CustomAttributes::check(&enumerator, "sales").is_ok());
        assert!(CustomAttributes::check(&enumerator, "Marketing")
            .unwrap_err()
            .contains("Enumerator"));
        assert!(CustomAttributes::check(&numeric, "4.5").is_ok());
        assert!(CustomAttributes::check(&numeric, "High").is_err());
        assert!(CustomAttributes::check(&boolean, "True").is_ok());
        assert!(CustomAttributes::check(&boolean, "yes").is_err());
    }

    #[test]
    fn a_device_lists_every_definition_and_its_own_values_only() {
        let mut attributes = CustomAttributes::seeded();
        attributes.set("DEV-1", RISK_ATTRIBUTE, Some("High"));
        let infos = attributes.infos("dev-1");
        assert_eq!(infos.len(), 2);
        assert_eq!(infos[0]["Name"], RISK_ATTRIBUTE);
        assert_eq!(infos[0]["Value"], "High");
        assert_eq!(infos[1]["Value"], Value::Null);
        assert!(attributes
            .infos("dev-2")
            .iter()
            .all(|i| i["Value"].is_null()));
        attributes.set("dev-1", "mtd_threat_level", None);
        assert_eq!(attributes.value("dev-1", RISK_ATTRIBUTE), None);
        attributes.set("dev-1", RISK_ATTRIBUTE, Some("Low"));
        attributes.forget_device("DEV-1");
        assert_eq!(attributes.value("dev-1", RISK_ATTRIBUTE), None);
    }
}
