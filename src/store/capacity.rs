//! What DynamoDB bills for each request, in capacity units, counted in
//! [`Metrics::capacity`].
//!
//! Every request asks for `ReturnConsumedCapacity = TOTAL`, and what DynamoDB reports
//! is counted as `reported`. A refused conditional write is billed as well (write
//! units for the larger of the item as it is and as it would have been, at least
//! one) but its answer is an error that reports nothing: fencelock counts it as
//! `computed`, from the size of the item the refusal hands back (every write asks
//! for `ALL_OLD` on a failed condition), rounded up to the next KB.

use aws_sdk_dynamodb::types::{AttributeValue, CancellationReason, ConsumedCapacity};

use super::item::Item;
use crate::metrics::{CapacityUnit, Metrics, UnitSource};

/// Counts what DynamoDB reported a request of `operation` consumed.
pub(super) fn reported<'a>(
    metrics: &Metrics,
    operation: &str,
    unit: CapacityUnit,
    consumed: impl IntoIterator<Item = &'a ConsumedCapacity>,
) {
    let units: f64 = consumed
        .into_iter()
        .filter_map(ConsumedCapacity::capacity_units)
        .sum();
    if units > 0.0 {
        metrics.capacity(operation, unit, units, UnitSource::Reported);
    }
}

/// Counts the write units of a conditional write of `operation` that DynamoDB refused
/// on `item` (absent: there was no item, and the refusal costs one unit).
pub(super) fn refused_write(metrics: &Metrics, operation: &str, item: Option<&Item>) {
    let units = write_units(item.map_or(0, item_bytes));
    metrics.capacity(operation, CapacityUnit::Write, units, UnitSource::Computed);
}

/// Counts the write units of a transaction of `operation` refused for `reasons`, as
/// an estimate: a transactional write costs two units per KB, and the size is known
/// only of the items whose condition failed (handed back with the refusal); the
/// others are counted as one KB.
pub(super) fn refused_transaction(
    metrics: &Metrics,
    operation: &str,
    reasons: &[CancellationReason],
) {
    let units: f64 = reasons
        .iter()
        .map(|reason| 2.0 * write_units(reason.item().map_or(0, item_bytes)))
        .sum();
    metrics.capacity(operation, CapacityUnit::Write, units, UnitSource::Computed);
}

/// The write units of writing an item of `bytes`: one per KB begun, at least one.
pub fn write_units(bytes: usize) -> f64 {
    bytes.div_ceil(1024).max(1) as f64
}

/// The size of `item` as DynamoDB counts it: each attribute's name and value.
pub fn item_bytes(item: &Item) -> usize {
    item.iter()
        .map(|(name, value)| name.len() + value_bytes(value))
        .sum()
}

/// The size of one attribute value by DynamoDB's rules: strings and binaries by
/// their bytes, a number by its significant digits (about one byte per two, plus
/// one), a boolean or null one byte, a map or list three bytes plus one per element
/// and the elements' own sizes.
fn value_bytes(value: &AttributeValue) -> usize {
    let number = |digits: &str| {
        let significant = digits
            .trim_start_matches('-')
            .replace('.', "")
            .trim_start_matches('0')
            .trim_end_matches('0')
            .len();
        significant.div_ceil(2) + 1
    };
    match value {
        AttributeValue::S(text) => text.len(),
        AttributeValue::N(digits) => number(digits),
        AttributeValue::B(blob) => blob.as_ref().len(),
        AttributeValue::Ss(texts) => texts.iter().map(String::len).sum(),
        AttributeValue::Ns(numbers) => numbers.iter().map(|n| number(n)).sum(),
        AttributeValue::Bs(blobs) => blobs.iter().map(|b| b.as_ref().len()).sum(),
        AttributeValue::M(fields) => {
            3 + fields
                .iter()
                .map(|(name, value)| 1 + name.len() + value_bytes(value))
                .sum::<usize>()
        }
        AttributeValue::L(values) => 3 + values.iter().map(|v| 1 + value_bytes(v)).sum::<usize>(),
        _ => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn item(pairs: &[(&str, AttributeValue)]) -> Item {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect()
    }

    #[test]
    fn sizes_follow_dynamodbs_rules() {
        let s = |t: &str| AttributeValue::S(t.into());
        let n = |t: &str| AttributeValue::N(t.into());
        assert_eq!(item_bytes(&item(&[("name", s("job"))])), 7);
        // 1234567 has 7 significant digits: 4 bytes + 1.
        assert_eq!(item_bytes(&item(&[("fence", n("1234567"))])), 5 + 5);
        assert_eq!(item_bytes(&item(&[("f", n("1000"))])), 1 + 2);
        let map = AttributeValue::M(HashMap::from([("7".to_owned(), s("abc"))]));
        assert_eq!(item_bytes(&item(&[("slots", map)])), 5 + 3 + 1 + 1 + 3);
    }

    #[test]
    fn a_write_costs_one_unit_per_kb_begun() {
        assert_eq!(write_units(0), 1.0);
        assert_eq!(write_units(1024), 1.0);
        assert_eq!(write_units(1025), 2.0);
        assert_eq!(write_units(64 * 1024 + 200), 65.0);
    }
}
