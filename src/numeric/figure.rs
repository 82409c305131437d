//! Numbers at the edge of the process. JSON has no NaN or infinity, and serde_json writes them
//! as `null`, which then fails to read back into an `f64`: one non-finite figure stored in a
//! job's result would make every read of it an error. Figures therefore cross JSON through
//! [`metric`]: finite values as numbers, the others as the strings `"NaN"`, `"Infinity"` and
//! `"-Infinity"` (what PostgreSQL and JavaScript's `Number()` read), and reading accepts a
//! number, one of those strings, or the `null` of rows written before.

/// A figure in JSON: a number, or the name of a non-finite value. Describes the wire form in
/// the OpenAPI document; the fields themselves stay `f64`.
#[derive(serde::Serialize, utoipa::ToSchema)]
#[serde(untagged)]
#[allow(dead_code)]
pub enum Metric {
    Finite(f64),
    NonFinite(NonFinite),
}

/// How a figure that is not a finite number is written.
#[derive(serde::Serialize, utoipa::ToSchema)]
#[allow(dead_code)]
pub enum NonFinite {
    NaN,
    Infinity,
    #[serde(rename = "-Infinity")]
    NegativeInfinity,
}

/// `#[serde(with = "crate::numeric::metric")]` for an `f64`.
pub mod metric {
    use serde::de::{self, Visitor};
    use serde::{Deserializer, Serializer};

    /// The JSON form of a non-finite value.
    pub fn name(value: f64) -> Option<&'static str> {
        if value.is_nan() {
            Some("NaN")
        } else if value == f64::INFINITY {
            Some("Infinity")
        } else if value == f64::NEG_INFINITY {
            Some("-Infinity")
        } else {
            None
        }
    }

    pub fn serialize<S: Serializer>(value: &f64, serializer: S) -> Result<S::Ok, S::Error> {
        match name(*value) {
            Some(text) => serializer.serialize_str(text),
            None => serializer.serialize_f64(*value),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<f64, D::Error> {
        deserializer.deserialize_any(MetricVisitor)
    }

    pub(super) struct MetricVisitor;

    impl<'de> Visitor<'de> for MetricVisitor {
        type Value = f64;

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str(r#"a number, "NaN", "Infinity" or "-Infinity""#)
        }

        fn visit_f64<E: de::Error>(self, v: f64) -> Result<f64, E> {
            Ok(v)
        }

        fn visit_i64<E: de::Error>(self, v: i64) -> Result<f64, E> {
            Ok(v as f64)
        }

        fn visit_u64<E: de::Error>(self, v: u64) -> Result<f64, E> {
            Ok(v as f64)
        }

        fn visit_str<E: de::Error>(self, v: &str) -> Result<f64, E> {
            match v {
                "NaN" => Ok(f64::NAN),
                "Infinity" => Ok(f64::INFINITY),
                "-Infinity" => Ok(f64::NEG_INFINITY),
                other => Err(E::invalid_value(de::Unexpected::Str(other), &self)),
            }
        }

        /// serde_json's form of a non-finite value, in rows written before this module.
        fn visit_unit<E: de::Error>(self) -> Result<f64, E> {
            Ok(f64::NAN)
        }

        fn visit_none<E: de::Error>(self) -> Result<f64, E> {
            Ok(f64::NAN)
        }
    }

    /// The same for an `Option<f64>`: `None` is `null`, as before.
    pub mod option {
        use serde::{Deserialize, Deserializer, Serializer};

        pub fn serialize<S: Serializer>(
            value: &Option<f64>,
            serializer: S,
        ) -> Result<S::Ok, S::Error> {
            match value {
                Some(v) => super::serialize(v, serializer),
                None => serializer.serialize_none(),
            }
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(
            deserializer: D,
        ) -> Result<Option<f64>, D::Error> {
            #[derive(Deserialize)]
            struct Wrapped(#[serde(with = "super")] f64);
            Ok(Option::<Wrapped>::deserialize(deserializer)?.map(|w| w.0))
        }
    }

    /// The same for a map of named figures.
    pub mod map {
        use std::collections::BTreeMap;

        use serde::ser::SerializeMap;
        use serde::{Deserialize, Deserializer, Serializer};

        pub fn serialize<S: Serializer>(
            value: &BTreeMap<String, f64>,
            serializer: S,
        ) -> Result<S::Ok, S::Error> {
            #[derive(serde::Serialize)]
            struct Wrapped<'a>(#[serde(with = "super")] &'a f64);
            let mut map = serializer.serialize_map(Some(value.len()))?;
            for (k, v) in value {
                map.serialize_entry(k, &Wrapped(v))?;
            }
            map.end()
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(
            deserializer: D,
        ) -> Result<BTreeMap<String, f64>, D::Error> {
            #[derive(Deserialize)]
            struct Wrapped(#[serde(with = "super")] f64);
            Ok(BTreeMap::<String, Wrapped>::deserialize(deserializer)?
                .into_iter()
                .map(|(k, v)| (k, v.0))
                .collect())
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde::{Deserialize, Serialize};

    #[derive(Debug, Serialize, Deserialize, PartialEq)]
    struct Figures {
        #[serde(with = "super::metric")]
        plain: f64,
        #[serde(with = "super::metric::option")]
        maybe: Option<f64>,
        #[serde(with = "super::metric::map")]
        named: BTreeMap<String, f64>,
    }

    #[test]
    fn non_finite_values_round_trip_as_named_strings_and_old_nulls_still_read() {
        let figures = Figures {
            plain: f64::INFINITY,
            maybe: Some(f64::NEG_INFINITY),
            named: [("a".to_owned(), f64::NAN), ("b".to_owned(), 1.5)].into(),
        };
        let json = serde_json::to_value(&figures).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"plain": "Infinity", "maybe": "-Infinity", "named": {"a": "NaN", "b": 1.5}})
        );
        let back: Figures = serde_json::from_value(json).unwrap();
        assert_eq!(back.plain, f64::INFINITY);
        assert_eq!(back.maybe, Some(f64::NEG_INFINITY));
        assert!(back.named["a"].is_nan());
        let old: Figures =
            serde_json::from_str(r#"{"plain": null, "maybe": null, "named": {"a": null, "b": 2}}"#)
                .unwrap();
        assert!(old.plain.is_nan());
        assert_eq!(old.maybe, None);
        assert!(old.named["a"].is_nan());
        assert_eq!(old.named["b"], 2.0);
        assert!(
            serde_json::from_str::<Figures>(r#"{"plain": "big", "maybe": null, "named": {}}"#)
                .is_err()
        );
    }
}
