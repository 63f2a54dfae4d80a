//! The leader record's wire form: rqlite's JSON value `{"id","api_addr","addr"}`.
//!
//! Owns: encoding and decoding the value stored under a key backend's leader key, so etcd and
//! Consul agree byte for byte on what a record is. Does not: talk to any backend.

use serde::Deserialize;

use crate::LeaderRecord;

/// The shape rqlite writes. Its Go struct tags every field `omitempty`, so each may be missing;
/// unknown fields are ignored so that a newer writer does not break an older reader.
#[derive(Deserialize)]
struct Wire {
    #[serde(default)]
    id: String,
    #[serde(default)]
    api_addr: String,
    #[serde(default)]
    addr: String,
}

impl LeaderRecord {
    /// The JSON value stored under the leader key.
    pub fn encode(&self) -> Vec<u8> {
        // Built as a `Value` (infallible) rather than `to_vec` (a `Result` that cannot fail
        // here); readers do not depend on the key order.
        serde_json::json!({ "id": self.id, "api_addr": self.api_addr, "addr": self.addr })
            .to_string()
            .into_bytes()
    }

    /// Parses a stored value. A value that is not such a JSON object, or that names no Raft
    /// address (nobody could join it), is corrupt.
    pub fn decode(bytes: &[u8]) -> Result<LeaderRecord, String> {
        let w: Wire = serde_json::from_slice(bytes).map_err(|e| {
            format!(
                "leader record is not rqlite's JSON ({e}): {:?}",
                String::from_utf8_lossy(bytes)
            )
        })?;
        if w.addr.trim().is_empty() {
            return Err(format!(
                "leader record has no \"addr\": {:?}",
                String::from_utf8_lossy(bytes)
            ));
        }
        Ok(LeaderRecord {
            id: w.id,
            api_addr: w.api_addr,
            addr: w.addr,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec() -> LeaderRecord {
        LeaderRecord {
            id: "1".into(),
            api_addr: "http://localhost:4001".into(),
            addr: "localhost:4002".into(),
        }
    }

    #[test]
    fn encode_round_trips_through_decode() {
        assert_eq!(LeaderRecord::decode(&rec().encode()).unwrap(), rec());
    }

    #[test]
    fn encodes_rqlite_field_names() {
        let v: serde_json::Value = serde_json::from_slice(&rec().encode()).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"id": "1", "api_addr": "http://localhost:4001", "addr": "localhost:4002"})
        );
    }

    #[test]
    fn decodes_what_rqlite_writes() {
        // Byte for byte what rqlite's json.Marshal produces (field order of its Go struct).
        let go = br#"{"id":"node1","api_addr":"http://10.0.0.1:4001","addr":"10.0.0.1:4002"}"#;
        let r = LeaderRecord::decode(go).unwrap();
        assert_eq!(r.id, "node1");
        assert_eq!(r.api_addr, "http://10.0.0.1:4001");
        assert_eq!(r.addr, "10.0.0.1:4002");
        // omitempty: an empty id is simply absent.
        let r = LeaderRecord::decode(br#"{"addr":"h:4002","extra":1}"#).unwrap();
        assert_eq!(
            (r.id.as_str(), r.api_addr.as_str(), r.addr.as_str()),
            ("", "", "h:4002")
        );
    }

    #[test]
    fn corrupt_values_are_refused() {
        for bad in [
            &b""[..],
            b"not json",
            b"[]",
            b"{}",
            br#"{"id":"1","addr":""}"#,
            br#"{"addr":5}"#,
        ] {
            assert!(
                LeaderRecord::decode(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
