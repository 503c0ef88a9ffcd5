//! What the collector receives: the wire format of the recording stream,
//! chosen by the sidecar's `--collector-format` and the webhook's
//! `collectorFormat`, which passes it on to the sidecar.

use serde::{Deserialize, Serialize};

/// Body format of the sidecar's event POSTs to the collector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CollectorFormat {
    /// `audit.k8s.io/v1` `EventList` batches (`application/json`), the body
    /// kube-apiserver's audit webhook backend sends.
    #[default]
    EventList,
    /// One audit `Event` JSON object per line (`application/x-ndjson`).
    Ndjson,
}

/// A `--collector-format` value that is neither `eventlist` nor `ndjson`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{value:?} is not a collector format (eventlist or ndjson)")]
pub struct UnknownCollectorFormat {
    /// The value given.
    pub value: String,
}

impl CollectorFormat {
    /// Every format, in the order help texts list them.
    pub const ALL: [CollectorFormat; 2] = [CollectorFormat::EventList, CollectorFormat::Ndjson];

    /// The value of `--collector-format` / `collectorFormat`.
    pub fn as_str(self) -> &'static str {
        match self {
            CollectorFormat::EventList => "eventlist",
            CollectorFormat::Ndjson => "ndjson",
        }
    }

    /// One line for help texts.
    pub fn description(self) -> &'static str {
        match self {
            CollectorFormat::EventList => {
                "`audit.k8s.io/v1` `EventList` batches, as kube-apiserver's audit webhook sends"
            }
            CollectorFormat::Ndjson => "One audit `Event` JSON object per line",
        }
    }

    /// `Content-Type` of an event POST in this format.
    pub fn content_type(self) -> &'static str {
        match self {
            CollectorFormat::EventList => "application/json",
            CollectorFormat::Ndjson => "application/x-ndjson",
        }
    }
}

impl std::str::FromStr for CollectorFormat {
    type Err = UnknownCollectorFormat;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        CollectorFormat::ALL
            .into_iter()
            .find(|f| f.as_str() == s)
            .ok_or_else(|| UnknownCollectorFormat {
                value: s.to_string(),
            })
    }
}

impl std::fmt::Display for CollectorFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn text_serde_and_parse_agree() {
        for f in CollectorFormat::ALL {
            assert_eq!(f.as_str().parse::<CollectorFormat>().unwrap(), f);
            assert_eq!(
                serde_json::to_value(f).unwrap(),
                serde_json::json!(f.as_str())
            );
            assert_eq!(
                serde_json::from_value::<CollectorFormat>(serde_json::json!(f.as_str())).unwrap(),
                f
            );
        }
        assert!("EventList".parse::<CollectorFormat>().is_err());
        assert_eq!(CollectorFormat::default(), CollectorFormat::EventList);
    }
}
