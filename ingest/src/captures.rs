//! The captures the matcher remembers until what they authorise comes: what each resolved to,
//! the device that took it, and whether something used it already. Bounded; the matcher
//! stage and the gather (matcher scale-out) each keep one.

use std::collections::{HashMap, VecDeque};

use facepay_domain::limits::MATCH_MEMORY_CAPTURES_MAX;
use facepay_domain::FaceCode;
use facepay_ledger::Identity;

/// The rule of a payment whose capture the matcher never saw (or has forgotten).
pub const UNKNOWN_CAPTURE: &str = "unknown_capture";

/// The rule of a capture used by another device than the one that took it: nobody's.
pub const CAPTURE_OF_ANOTHER_DEVICE: &str = "capture_of_another_device";

/// What a remembered capture resolved to, who took it, and whether something used it.
struct Capture {
    identity: Identity,
    /// The device that captured it (`None`: restored after a restart, device unknown).
    device: Option<facepay_domain::DeviceId>,
    used: bool,
}

/// Face code → its [`Capture`]. Bounded by [`MATCH_MEMORY_CAPTURES_MAX`]: oldest forgotten
/// first, since a payment follows its capture within seconds on the same device.
#[derive(Default)]
pub(crate) struct CaptureMemory {
    identities: HashMap<FaceCode, Capture>,
    order: VecDeque<FaceCode>,
}

impl CaptureMemory {
    /// What the capture `face_code` resolved to; [`UNKNOWN_CAPTURE`] if it is not (or no
    /// longer) remembered.
    pub(crate) fn identity_of(&self, face_code: &FaceCode) -> Identity {
        match self.identities.get(face_code) {
            Some(c) => c.identity.clone(),
            None => Identity::Unresolved { rule: UNKNOWN_CAPTURE.to_string() },
        }
    }

    /// What the capture `face_code` resolved to for a use by `device`, and whether this is its
    /// first use (it is marked used). A capture is its own device's: another device's use of
    /// it resolves to nobody ([`CAPTURE_OF_ANOTHER_DEVICE`]) and spends nothing. A capture
    /// restored after a restart counts as used: its use may have come before the restart.
    pub(crate) fn spend(
        &mut self,
        face_code: &FaceCode,
        device: Option<&facepay_domain::DeviceId>,
    ) -> (Identity, bool) {
        match self.identities.get_mut(face_code) {
            Some(c) if c.device.is_some() && c.device.as_ref() != device => {
                (Identity::Unresolved { rule: CAPTURE_OF_ANOTHER_DEVICE.to_string() }, false)
            }
            Some(c) => (c.identity.clone(), !std::mem::replace(&mut c.used, true)),
            None => (Identity::Unresolved { rule: UNKNOWN_CAPTURE.to_string() }, false),
        }
    }

    pub(crate) fn contains(&self, face_code: &FaceCode) -> bool {
        self.identities.contains_key(face_code)
    }

    /// Remembers a capture just identified at `device` (unused).
    pub(crate) fn remember(
        &mut self,
        face_code: FaceCode,
        identity: Identity,
        device: Option<facepay_domain::DeviceId>,
    ) {
        self.keep(face_code, Capture { identity, device, used: false });
    }

    /// Remembers a capture identified before a restart (its device and use unknown: any
    /// device's, used).
    pub(crate) fn restore(&mut self, face_code: FaceCode, identity: Identity) {
        self.keep(face_code, Capture { identity, device: None, used: true });
    }

    fn keep(&mut self, face_code: FaceCode, capture: Capture) {
        if self.identities.insert(face_code.clone(), capture).is_none() {
            self.order.push_back(face_code);
        }
        while self.order.len() > MATCH_MEMORY_CAPTURES_MAX {
            if let Some(old) = self.order.pop_front() {
                self.identities.remove(&old);
            }
        }
    }
}
