//! Device tags of the AirWatch simulator, which the connector uses as its
//! risk signal: one tag per level, `{name}_Low` … `{name}_Critical`
//! (`MDM-APIS.md`, AirWatch "Risk signal").
//!
//! | Request | Answer |
//! |---|---|
//! | `GET /API/mdm/tags/search?name=…` | `{"Tags":[{"Id":{"Value":n},"TagName","TagType","LocationGroupId"}],"Page","PageSize","Total"}`: every tag whose name **contains** `name` (ignoring case; no `name`: all tags); none → 204, no body |
//! | `POST /API/mdm/tags/{tagId}/adddevices` and `…/removedevices`, body `{"BulkValues":{"Value":["<device Id>", …]}}` | 200 `{"TotalItems","AcceptedItems","FailedItems","Faults":{"Fault":[{"ErrorCode","ItemValue","Message"}]}}`; a device already in (or not in) the tag is accepted, one AirWatch does not know is a failed item; unknown tag → 404; a body that is not that → 400 |
//! | `GET /API/mdm/tags/{tagId}/devices` | `{"Device":[{"DeviceId":n,"FriendlyName"}]}` (empty: `{"Device":[]}`); unknown tag → 404 |
//!
//! The answer shapes beyond `MDM-APIS.md`'s (the search's paging fields,
//! the bulk result, a tag's extra fields, the 204) are **\[ours\]**, after
//! AirWatch's own search and bulk answers.
//!
//! Each device of an `adddevices`/`removedevices` body is recorded as one
//! [`RecordedAction`], `AddTag:{TagName}` or `RemoveTag:{TagName}` (for an
//! unknown tag id `AddTag:#{tagId}`), `device_ref` the value as sent, with
//! status 200 for an accepted item, 404 for a failed one (a device the
//! simulator does not know) or the request's 404/400.
//!
//! Seeded: the four level tags of `MTD_Threat_Level` with the ids
//! [`SEEDED_TAGS`] (no device in any: every device is `Secured`), and two
//! other tags, `VIP` and `Kiosk`.

use std::collections::BTreeSet;

use axum::{
    body::Bytes,
    extract::{Path, RawQuery, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    Json,
};
use chrono::Utc;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::{aw_error, bad_request, error_code, query_params, str_field, AirwatchState};
use crate::{
    core::{json_body, ControlError, RecordedAction},
    util::{read, write},
    SimKind,
};

/// The tags every simulator starts with: (id, name).
pub const SEEDED_TAGS: &[(u64, &str)] = &[
    (10_001, "MTD_Threat_Level_Low"),
    (10_002, "MTD_Threat_Level_Medium"),
    (10_003, "MTD_Threat_Level_High"),
    (10_004, "MTD_Threat_Level_Critical"),
    (10_005, "VIP"),
    (10_006, "Kiosk"),
];

/// The first id a tag created through the control API gets.
const FIRST_NEW_TAG_ID: u64 = 10_101;

/// A tag and the devices in it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SimTag {
    pub id: u64,
    pub name: String,
    /// The `Id.Value`s of the tagged devices.
    pub devices: BTreeSet<u64>,
}

/// Every tag, and the id the next new one gets.
#[derive(Debug)]
pub(super) struct Tags {
    tags: Vec<SimTag>,
    next_id: u64,
}

impl Tags {
    pub(super) fn seeded() -> Self {
        Self {
            tags: SEEDED_TAGS
                .iter()
                .map(|(id, name)| SimTag {
                    id: *id,
                    name: (*name).to_owned(),
                    devices: BTreeSet::new(),
                })
                .collect(),
            next_id: FIRST_NEW_TAG_ID,
        }
    }

    fn by_name(&mut self, name: &str) -> Option<&mut SimTag> {
        self.tags
            .iter_mut()
            .find(|t| t.name.eq_ignore_ascii_case(name.trim()))
    }

    pub(super) fn forget_device(&mut self, device_id: u64) {
        for tag in &mut self.tags {
            tag.devices.remove(&device_id);
        }
    }
}

impl AirwatchState {
    /// Every tag with its devices, in creation order.
    pub fn tags(&self) -> Vec<SimTag> {
        read(&self.tags).tags.clone()
    }

    /// The tag named `name` (ignoring case).
    pub fn tag(&self, name: &str) -> Option<SimTag> {
        write(&self.tags).by_name(name).cloned()
    }

    /// Creates a tag (as an admin does in the console); returns its id.
    pub fn add_tag(&self, name: &str) -> Result<u64, ControlError> {
        let name = name.trim();
        if name.is_empty() {
            return Err(ControlError::Invalid("a tag needs a name".into()));
        }
        let mut tags = write(&self.tags);
        if tags.by_name(name).is_some() {
            return Err(ControlError::Conflict(format!("tag {name} exists")));
        }
        let id = tags.next_id;
        tags.next_id += 1;
        tags.tags.push(SimTag {
            id,
            name: name.to_owned(),
            devices: BTreeSet::new(),
        });
        Ok(id)
    }

    /// Deletes a tag (its id is not reused); `false` when there was none.
    pub fn remove_tag(&self, name: &str) -> bool {
        let mut tags = write(&self.tags);
        let before = tags.tags.len();
        tags.tags
            .retain(|t| !t.name.eq_ignore_ascii_case(name.trim()));
        tags.tags.len() != before
    }

    /// Renames a tag; its id and devices stay.
    pub fn rename_tag(&self, from: &str, to: &str) -> Result<(), ControlError> {
        let to = to.trim();
        if to.is_empty() {
            return Err(ControlError::Invalid("a tag needs a name".into()));
        }
        let mut tags = write(&self.tags);
        let from_id = tags.by_name(from).ok_or(ControlError::NotFound)?.id;
        if tags.by_name(to).is_some_and(|t| t.id != from_id) {
            return Err(ControlError::Conflict(format!("tag {to} exists")));
        }
        if let Some(tag) = tags.by_name(from) {
            tag.name = to.to_owned();
        }
        Ok(())
    }

    /// The names of the tags a device is in, in tag creation order.
    pub fn device_tags(&self, device_id: u64) -> Vec<String> {
        read(&self.tags)
            .tags
            .iter()
            .filter(|t| t.devices.contains(&device_id))
            .map(|t| t.name.clone())
            .collect()
    }

    /// The levels (`Low`, `Medium`, `High`, `Critical`, lowest first) whose
    /// tag `{prefix}_{Level}` the device is in: empty means `Secured`, more
    /// than one is what a connector must never leave behind.
    pub fn risk_levels(&self, device_id: u64, prefix: &str) -> Vec<String> {
        let tags = self.device_tags(device_id);
        ["Low", "Medium", "High", "Critical"]
            .into_iter()
            .filter(|level| {
                let name = format!("{prefix}_{level}");
                tags.iter().any(|t| t.eq_ignore_ascii_case(&name))
            })
            .map(str::to_owned)
            .collect()
    }

    /// Puts a device into a tag behind the API's back (not recorded).
    pub fn tag_device(&self, tag: &str, device_id: u64) -> Result<(), ControlError> {
        self.device(device_id).ok_or(ControlError::NotFound)?;
        write(&self.tags)
            .by_name(tag)
            .ok_or(ControlError::NotFound)?
            .devices
            .insert(device_id);
        Ok(())
    }

    /// Takes a device out of a tag behind the API's back (not recorded).
    pub fn untag_device(&self, tag: &str, device_id: u64) -> Result<(), ControlError> {
        write(&self.tags)
            .by_name(tag)
            .ok_or(ControlError::NotFound)?
            .devices
            .remove(&device_id);
        Ok(())
    }
}

// --------------------------------------------------------------- vendor API

type S = State<std::sync::Arc<AirwatchState>>;

fn tag_json(tag: &SimTag) -> Value {
    json!({
        "Id": { "Value": tag.id },
        "TagName": tag.name,
        "TagType": 1,
        "LocationGroupId": 570,
    })
}

/// `GET /API/mdm/tags/search?name=…`.
pub(super) async fn search_tags(State(state): S, RawQuery(raw): RawQuery) -> Response {
    let params = query_params(raw);
    let wanted = params
        .get("name")
        .map(|n| n.trim().to_lowercase())
        .unwrap_or_default();
    let found: Vec<Value> = read(&state.tags)
        .tags
        .iter()
        .filter(|t| t.name.to_lowercase().contains(&wanted))
        .map(tag_json)
        .collect();
    if found.is_empty() {
        return StatusCode::NO_CONTENT.into_response();
    }
    let total = found.len();
    Json(json!({ "Tags": found, "Page": 0, "PageSize": 500, "Total": total })).into_response()
}

fn tag_not_found(id: &str) -> Response {
    aw_error(
        StatusCode::NOT_FOUND,
        error_code::NOT_FOUND,
        &format!("Tag '{id}' was not found."),
    )
}

/// The device values of a `BulkValues` body (strings or numbers), or `None`.
fn bulk_values(body: &Bytes) -> Option<Vec<String>> {
    let value: Value = serde_json::from_slice(body).ok()?;
    value
        .pointer("/BulkValues/Value")?
        .as_array()?
        .iter()
        .map(|v| match v {
            Value::String(s) => Some(s.trim().to_owned()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        })
        .collect()
}

/// `POST /API/mdm/tags/{tagId}/adddevices` (`add`) or `…/removedevices`.
fn change_tag(state: &AirwatchState, tag_id: &str, add: bool, body: &Bytes) -> Response {
    let verb = if add { "AddTag" } else { "RemoveTag" };
    let values = bulk_values(body);
    let record = |action: &str, device_ref: &str, device_id: Option<u64>, status: StatusCode| {
        state.core.record_action(RecordedAction {
            seq: 0,
            at: Utc::now(),
            kind: SimKind::Airwatch,
            device_ref: device_ref.to_owned(),
            device_id: device_id.map(|id| id.to_string()),
            action: action.to_owned(),
            profile_id: None,
            body: serde_json::from_slice(body)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(body).into_owned())),
            status: status.as_u16(),
        });
    };
    let known_device = |value: &str| {
        value
            .parse::<u64>()
            .ok()
            .filter(|id| state.device(*id).is_some())
    };
    let mut tags = write(&state.tags);
    let tag = tag_id
        .trim()
        .parse::<u64>()
        .ok()
        .and_then(|id| tags.tags.iter_mut().find(|t| t.id == id));
    let Some(tag) = tag else {
        drop(tags);
        let action = format!("{verb}:#{tag_id}");
        match &values {
            Some(values) if !values.is_empty() => values
                .iter()
                .for_each(|v| record(&action, v, known_device(v), StatusCode::NOT_FOUND)),
            _ => record(&action, "", None, StatusCode::NOT_FOUND),
        }
        return tag_not_found(tag_id);
    };
    let action = format!("{verb}:{}", tag.name);
    let Some(values) = values.filter(|v| !v.is_empty()) else {
        drop(tags);
        record(&action, "", None, StatusCode::BAD_REQUEST);
        return bad_request("The body must be {\"BulkValues\":{\"Value\":[\"<device id>\", …]}}.");
    };
    let mut faults = Vec::new();
    let mut outcomes = Vec::with_capacity(values.len());
    for value in &values {
        match known_device(value) {
            Some(id) => {
                if add {
                    tag.devices.insert(id);
                } else {
                    tag.devices.remove(&id);
                }
                outcomes.push((value, Some(id), StatusCode::OK));
            }
            None => {
                faults.push(json!({
                    "ErrorCode": error_code::NOT_FOUND,
                    "ItemValue": value,
                    "Message": "Device not found.",
                }));
                outcomes.push((value, None, StatusCode::NOT_FOUND));
            }
        }
    }
    drop(tags);
    for (value, id, status) in outcomes {
        record(&action, value, id, status);
    }
    Json(json!({
        "TotalItems": values.len(),
        "AcceptedItems": values.len() - faults.len(),
        "FailedItems": faults.len(),
        "Faults": { "Fault": faults },
    }))
    .into_response()
}

pub(super) async fn add_devices(
    State(state): S,
    Path(tag_id): Path<String>,
    body: Bytes,
) -> Response {
    change_tag(&state, &tag_id, true, &body)
}

pub(super) async fn remove_devices(
    State(state): S,
    Path(tag_id): Path<String>,
    body: Bytes,
) -> Response {
    change_tag(&state, &tag_id, false, &body)
}

/// `GET /API/mdm/tags/{tagId}/devices`.
pub(super) async fn tag_devices(State(state): S, Path(tag_id): Path<String>) -> Response {
    let members: Option<Vec<u64>> = {
        let tags = read(&state.tags);
        tag_id
            .trim()
            .parse::<u64>()
            .ok()
            .and_then(|id| tags.tags.iter().find(|t| t.id == id))
            .map(|t| t.devices.iter().copied().collect())
    };
    let Some(members) = members else {
        return tag_not_found(&tag_id);
    };
    let devices: Vec<Value> = members
        .into_iter()
        .map(|id| {
            let name = state
                .device(id)
                .map(|d| str_field(&d, "DeviceFriendlyName").to_owned())
                .unwrap_or_default();
            json!({ "DeviceId": id, "FriendlyName": name })
        })
        .collect();
    Json(json!({ "Device": devices })).into_response()
}

// -------------------------------------------------------------- control API

/// `GET /_sim/airwatch/tags`.
pub(super) async fn control_tags(State(state): S) -> Json<Vec<SimTag>> {
    Json(state.tags())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TagName {
    name: String,
}

/// `POST /_sim/airwatch/tags` `{"name"}` → 201 the new tag.
pub(super) async fn control_add_tag(
    State(state): S,
    body: Bytes,
) -> Result<Response, ControlError> {
    let new: TagName = json_body(&body)?;
    state.add_tag(&new.name)?;
    let tag = state.tag(&new.name).ok_or(ControlError::NotFound)?;
    Ok((StatusCode::CREATED, Json(tag)).into_response())
}

/// `GET /_sim/airwatch/tags/{name}`.
pub(super) async fn control_tag(
    State(state): S,
    Path(name): Path<String>,
) -> Result<Json<SimTag>, ControlError> {
    state.tag(&name).map(Json).ok_or(ControlError::NotFound)
}

/// `PATCH /_sim/airwatch/tags/{name}` `{"name":"new"}`.
pub(super) async fn control_rename_tag(
    State(state): S,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<StatusCode, ControlError> {
    let rename: TagName = json_body(&body)?;
    state.rename_tag(&name, &rename.name)?;
    Ok(StatusCode::NO_CONTENT)
}

/// `DELETE /_sim/airwatch/tags/{name}`.
pub(super) async fn control_remove_tag(
    State(state): S,
    Path(name): Path<String>,
) -> Result<StatusCode, ControlError> {
    if state.remove_tag(&name) {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ControlError::NotFound)
    }
}

fn device_param(id: &str) -> Result<u64, ControlError> {
    id.trim().parse().map_err(|_| ControlError::NotFound)
}

/// `PUT /_sim/airwatch/tags/{name}/devices/{id}`: tag behind the API's back.
pub(super) async fn control_tag_device(
    State(state): S,
    Path((name, id)): Path<(String, String)>,
) -> Result<StatusCode, ControlError> {
    state.tag_device(&name, device_param(&id)?)?;
    Ok(StatusCode::NO_CONTENT)
}

/// `DELETE /_sim/airwatch/tags/{name}/devices/{id}`.
pub(super) async fn control_untag_device(
    State(state): S,
    Path((name, id)): Path<(String, String)>,
) -> Result<StatusCode, ControlError> {
    state.untag_device(&name, device_param(&id)?)?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /_sim/airwatch/devices/{id}/tags`: the tag names.
pub(super) async fn control_device_tags(
    State(state): S,
    Path(id): Path<String>,
) -> Result<Json<Vec<String>>, ControlError> {
    let id = device_param(&id)?;
    state.device(id).ok_or(ControlError::NotFound)?;
    Ok(Json(state.device_tags(id)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::AirwatchOptions;

    #[test]
    fn tags_are_renamed_removed_and_recreated_with_new_ids() {
        let state = AirwatchState::new(1, 3, AirwatchOptions::default());
        let id = state.device_ids()[0];
        state.tag_device("mtd_threat_level_high", id).unwrap();
        assert_eq!(state.risk_levels(id, "MTD_Threat_Level"), vec!["High"]);
        state
            .rename_tag("MTD_Threat_Level_High", "Old_High")
            .unwrap();
        assert!(state.risk_levels(id, "MTD_Threat_Level").is_empty());
        assert_eq!(state.device_tags(id), vec!["Old_High"]);
        assert_eq!(
            state.rename_tag("Old_High", "vip"),
            Err(ControlError::Conflict("tag vip exists".into()))
        );
        assert!(state.remove_tag("old_high"));
        assert!(!state.remove_tag("old_high"));
        let new = state.add_tag("MTD_Threat_Level_High").unwrap();
        assert!(new >= FIRST_NEW_TAG_ID);
        assert!(SEEDED_TAGS.iter().all(|(seeded, _)| *seeded != new));
        assert!(state.device_tags(id).is_empty());
        // A removed device leaves every tag.
        state.tag_device("VIP", id).unwrap();
        state.remove_device(id).unwrap();
        assert!(state.tag("VIP").unwrap().devices.is_empty());
    }
}
