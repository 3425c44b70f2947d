//! PII masking for MDMs with `mask_pii = true`.
//!
//! Names and e-mail are replaced by masked display forms (`J***`,
//! `j***@acme.example`) before anything reaches the store or a log line; a keyed
//! hash (HMAC-SHA256 with a per-tenant key the store keeps) lets the same
//! person match across syncs without keeping the clear value. The user's key
//! at the MDM (`mdm_user_id`) is replaced by its keyed hash too, because MDMs
//! key users by user name or e-mail.

use crate::store::{MaskedUser, PiiMasker};
use hmac::{Hmac, Mac};
use mtd_adapter::{Device, User};
use sha2::Sha256;

/// Masks with one tenant's key.
#[derive(Clone)]
pub struct KeyedMasker {
    key: Vec<u8>,
}

impl std::fmt::Debug for KeyedMasker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyedMasker(**REDACTED**)")
    }
}

impl KeyedMasker {
    pub fn new(key: Vec<u8>) -> Self {
        KeyedMasker { key }
    }

    fn hash(&self, domain: &str, value: &str) -> String {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.key)
            .expect("HMAC takes a key of any length");
        mac.update(domain.as_bytes());
        mac.update(b"\0");
        mac.update(value.trim().to_lowercase().as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }

    /// A device's name often holds its user's name ("Jane Doe's iPhone"):
    /// with masking on, such a name is masked too.
    pub fn mask_device(&self, device: &mut Device) {
        let Some(name) = device.name.as_deref() else {
            return;
        };
        let lower = name.to_lowercase();
        let user_words: Vec<String> = device
            .user
            .iter()
            .flat_map(|u| [&u.first_name, &u.last_name, &u.username, &u.email])
            .flatten()
            .flat_map(|v| {
                v.split(|c: char| !c.is_alphanumeric())
                    .map(str::to_lowercase)
                    .collect::<Vec<_>>()
            })
            .filter(|w| w.chars().count() >= 3)
            .collect();
        if user_words.iter().any(|w| lower.contains(w.as_str())) {
            device.name = Some(mask_word(name));
        }
    }
}

impl PiiMasker for KeyedMasker {
    fn mask(&self, user: &User) -> MaskedUser {
        let identity = user
            .email
            .as_deref()
            .filter(|e| !e.trim().is_empty())
            .or(user.username.as_deref())
            .unwrap_or(&user.mdm_user_id);
        MaskedUser {
            user: User {
                mdm_user_id: format!("h:{}", &self.hash("mdm_user_id", &user.mdm_user_id)[..32]),
                username: user.username.as_deref().map(mask_identity),
                email: user.email.as_deref().map(mask_identity),
                first_name: user.first_name.as_deref().map(mask_word),
                last_name: user.last_name.as_deref().map(mask_word),
            },
            pii_hash: self.hash("person", identity),
        }
    }
}

/// `Jane` → `J***`: the first letter, so admins can still tell people apart at a glance.
pub fn mask_word(value: &str) -> String {
    match value.trim().chars().next() {
        Some(c) => format!("{c}***"),
        None => String::new(),
    }
}

/// `jane.doe@acme.example` → `j***@acme.example`; `jdoe` → `j***`. The domain is
/// the organisation's, not the person's, and helps admins read the list.
pub fn mask_identity(value: &str) -> String {
    match value.split_once('@') {
        Some((local, domain)) => format!("{}@{}", mask_word(local), domain),
        None => mask_word(value),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jane() -> User {
        User {
            mdm_user_id: "jane.doe@acme.example".into(),
            username: Some("jane.doe@acme.example".into()),
            email: Some("Jane.Doe@acme.example".into()),
            first_name: Some("Jane".into()),
            last_name: Some("Doe".into()),
        }
    }

    #[test]
    fn masked_users_keep_no_clear_name_or_email() {
        let m = KeyedMasker::new(b"k1".to_vec()).mask(&jane());
        let text = format!("{:?}", m);
        for clear in ["jane", "Jane", "Doe", "doe"] {
            assert!(!text.contains(clear), "{clear} in {text}");
        }
        assert_eq!(m.user.first_name.as_deref(), Some("J***"));
        assert_eq!(m.user.email.as_deref(), Some("J***@acme.example"));
        assert!(m.user.mdm_user_id.starts_with("h:"));
    }

    #[test]
    fn the_same_person_hashes_the_same_and_another_key_differently() {
        let a = KeyedMasker::new(b"k1".to_vec());
        let mut other_case = jane();
        other_case.email = Some("jane.doe@ACME.example".into());
        assert_eq!(a.mask(&jane()).pii_hash, a.mask(&other_case).pii_hash);
        assert_eq!(
            a.mask(&jane()).user.mdm_user_id,
            a.mask(&jane()).user.mdm_user_id
        );
        assert_ne!(
            a.mask(&jane()).pii_hash,
            KeyedMasker::new(b"k2".to_vec()).mask(&jane()).pii_hash
        );
    }

    #[test]
    fn device_names_holding_the_users_name_are_masked() {
        let m = KeyedMasker::new(b"k".to_vec());
        let mut d = crate::store::testutil::device("d1");
        d.user = Some(jane());
        d.name = Some("Jane's iPhone".into());
        m.mask_device(&mut d);
        assert_eq!(d.name.as_deref(), Some("J***"));
        d.name = Some("Lobby iPad 3".into());
        m.mask_device(&mut d);
        assert_eq!(d.name.as_deref(), Some("Lobby iPad 3"));
    }
}
