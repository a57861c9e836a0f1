//! The row filters and mutations tiersweep's predicates are built from. Exact matches use
//! range filters (closed on both ends) rather than regexes, so no key, token or revision
//! ever needs RE2 escaping.

use bigtable_rs::google::bigtable::v2::row_filter::{Chain, Condition, Filter};
use bigtable_rs::google::bigtable::v2::{
    ColumnRange, Mutation, RowFilter, TimestampRange, ValueRange, column_range, mutation,
    value_range,
};

fn of(filter: Filter) -> RowFilter {
    RowFilter {
        filter: Some(filter),
    }
}

/// Cells passing every filter in turn.
pub fn chain(filters: Vec<RowFilter>) -> RowFilter {
    of(Filter::Chain(Chain { filters }))
}

/// `then` over the row if `predicate` passes any cell of it, else `otherwise`.
pub fn condition(predicate: RowFilter, then: RowFilter, otherwise: RowFilter) -> RowFilter {
    of(Filter::Condition(Box::new(Condition {
        predicate_filter: Some(Box::new(predicate)),
        true_filter: Some(Box::new(then)),
        false_filter: Some(Box::new(otherwise)),
    })))
}

pub fn block_all() -> RowFilter {
    of(Filter::BlockAllFilter(true))
}

/// Every cell of one family.
pub fn family(family: &str) -> RowFilter {
    of(Filter::ColumnRangeFilter(ColumnRange {
        family_name: family.to_owned(),
        start_qualifier: None,
        end_qualifier: None,
    }))
}

/// Every cell of one column.
pub fn column(family: &str, qualifier: &[u8]) -> RowFilter {
    of(Filter::ColumnRangeFilter(ColumnRange {
        family_name: family.to_owned(),
        start_qualifier: Some(column_range::StartQualifier::StartQualifierClosed(
            qualifier.to_vec(),
        )),
        end_qualifier: Some(column_range::EndQualifier::EndQualifierClosed(
            qualifier.to_vec(),
        )),
    }))
}

/// Only the newest cell of each column: GC of older versions is lazy, so reads and
/// predicates must not rely on it.
pub fn latest() -> RowFilter {
    of(Filter::CellsPerColumnLimitFilter(1))
}

/// Cells with their values emptied: a row's keys and stamps without its bytes.
pub fn strip_value() -> RowFilter {
    of(Filter::StripValueTransformer(true))
}

pub fn value_is(value: &[u8]) -> RowFilter {
    of(Filter::ValueRangeFilter(ValueRange {
        start_value: Some(value_range::StartValue::StartValueClosed(value.to_vec())),
        end_value: Some(value_range::EndValue::EndValueClosed(value.to_vec())),
    }))
}

/// Cells stamped strictly before `micros`.
pub fn stamped_before(micros: i64) -> RowFilter {
    stamped_between(0, micros)
}

/// Cells stamped at or after `from_micros` and strictly before `to_micros`.
pub fn stamped_between(from_micros: i64, to_micros: i64) -> RowFilter {
    of(Filter::TimestampRangeFilter(TimestampRange {
        start_timestamp_micros: from_micros,
        end_timestamp_micros: to_micros,
    }))
}

fn mutation(m: mutation::Mutation) -> Mutation {
    Mutation { mutation: Some(m) }
}

/// Bigtable picks the timestamp: for cells whose time only matters to GC (HV data, fences).
pub const SERVER_TIME: i64 = -1;

pub fn set_cell(family: &str, qualifier: &[u8], timestamp_micros: i64, value: Vec<u8>) -> Mutation {
    mutation(mutation::Mutation::SetCell(mutation::SetCell {
        family_name: family.to_owned(),
        column_qualifier: qualifier.to_vec(),
        timestamp_micros,
        value,
    }))
}

pub fn delete_family(family: &str) -> Mutation {
    mutation(mutation::Mutation::DeleteFromFamily(
        mutation::DeleteFromFamily {
            family_name: family.to_owned(),
        },
    ))
}

pub fn delete_row() -> Mutation {
    mutation(mutation::Mutation::DeleteFromRow(
        mutation::DeleteFromRow {},
    ))
}

pub fn delete_column(family: &str, qualifier: &[u8]) -> Mutation {
    mutation(mutation::Mutation::DeleteFromColumn(
        mutation::DeleteFromColumn {
            family_name: family.to_owned(),
            column_qualifier: qualifier.to_vec(),
            time_range: None,
        },
    ))
}
