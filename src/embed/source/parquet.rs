//! Hugging Face datasets parquet shards as a source of items.
//!
//! A shard's footer (schema, row groups, key-value metadata) is read when the shard is reached
//! and the configured columns are resolved to leaf columns. Rows are decoded one row group at a
//! time with the `parquet` crate's typed column readers, one column chunk after the other; a
//! value is present where its definition level is the column's maximum. Skipping uses the
//! footers' row counts and decodes only the row group in which a skip ends.
//! Compatibility details: docs/embed.md, "Parquet shards".

use std::collections::VecDeque;
use std::fs::File;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use ::parquet::basic::Type as PhysicalType;
use ::parquet::column::reader::{ColumnReader, ColumnReaderImpl};
use ::parquet::data_type::DataType;
use ::parquet::file::reader::{FileReader, RowGroupReader, SerializedFileReader};
use ::parquet::schema::types::SchemaDescriptor;
use anyhow::bail;

use super::{Entry, Item, Source};

/// Which columns hold the image, the text, the label and the group.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ParquetOptions {
    /// The image column (`struct<bytes, path>` or binary). `None` means `image`.
    pub image_column: Option<String>,
    /// A string column with the text (a caption). `None`: no text is read.
    pub text_column: Option<String>,
    /// An integer (class index), boolean or string label column. `None`: no label is read.
    pub label_column: Option<String>,
    /// A second per-row attribute, read as the label column is (class names, booleans as
    /// `true`/`false`): the groups of a bias analysis. `None`: no group is read.
    pub group_column: Option<String>,
    /// Read no images (an embed with the text tower alone): the image column need not exist,
    /// and where it does its bytes are never read.
    pub skip_images: bool,
}

impl ParquetOptions {
    fn image_column(&self) -> &str {
        self.image_column.as_deref().unwrap_or("image")
    }
}

/// A [`Source`] over parquet shards, read in the given order, row group by row group.
pub struct ParquetSource {
    shards: Vec<PathBuf>,
    /// The name of each shard in keys and messages (its file name unless set otherwise).
    names: Vec<String>,
    opts: ParquetOptions,
    /// Index in `shards` of the next shard to open.
    next_shard: usize,
    current: Option<Shard>,
    /// Decoded entries of the current row group not yet handed out.
    buffered: VecDeque<Entry>,
    /// Row groups decoded so far (skipping is meant to avoid decoding).
    decoded_groups: usize,
}

impl ParquetSource {
    /// A source over `shards`, in this order.
    ///
    /// Fails when there are no shards, a shard is not a file, or the first shard with a
    /// readable footer lacks a configured column (the message lists the columns it has).
    pub fn open(shards: Vec<PathBuf>, opts: ParquetOptions) -> anyhow::Result<Self> {
        if shards.is_empty() {
            bail!("no parquet shards given");
        }
        for shard in &shards {
            if !shard.is_file() {
                bail!("parquet shard {} is not a file", shard.display());
            }
        }
        // Check the columns now, so that options that do not fit the dataset fail before any
        // work is done. Shards with a damaged footer are reported when they are reached.
        for shard in &shards {
            if let Ok(opened) = Shard::open(shard, shard_name(shard), &opts) {
                opened?;
                break;
            }
        }
        Ok(Self {
            names: shards.iter().map(|p| shard_name(p)).collect(),
            shards,
            opts,
            next_shard: 0,
            current: None,
            buffered: VecDeque::new(),
            decoded_groups: 0,
        })
    }

    /// Names the shards in keys and messages with `names` (one per shard, in order) instead of
    /// their file names: a dataset repository's files are known by their path in it.
    pub fn with_names(mut self, names: Vec<String>) -> anyhow::Result<Self> {
        if names.len() != self.shards.len() {
            bail!(
                "{} names given for {} parquet shards",
                names.len(),
                self.shards.len()
            );
        }
        self.names = names;
        Ok(self)
    }

    /// Makes the next shard current. `Ok(None)` at the end; `Ok(Some(entry))` when the shard
    /// is unreadable as a whole (that entry is its one position).
    fn open_next(&mut self) -> anyhow::Result<Option<Option<Entry>>> {
        let Some(path) = self.shards.get(self.next_shard).cloned() else {
            return Ok(None);
        };
        let name = self.names[self.next_shard].clone();
        self.next_shard += 1;
        match Shard::open(&path, name.clone(), &self.opts) {
            Ok(shard) => {
                self.current = Some(shard?);
                Ok(Some(None))
            }
            Err(reason) => Ok(Some(Some(Entry::Unreadable { key: name, reason }))),
        }
    }

    /// Decodes the current shard's next row group into `buffered`; false when the shard has
    /// no row group left.
    fn decode_next_group(&mut self) -> bool {
        let Some(shard) = &mut self.current else {
            return false;
        };
        if shard.next_group >= shard.reader.num_row_groups() {
            return false;
        }
        self.buffered.extend(shard.decode_group());
        self.decoded_groups += 1;
        true
    }
}

impl Source for ParquetSource {
    fn next_entry(&mut self) -> anyhow::Result<Option<Entry>> {
        loop {
            if let Some(entry) = self.buffered.pop_front() {
                return Ok(Some(entry));
            }
            if self.decode_next_group() {
                continue;
            }
            self.current = None;
            match self.open_next()? {
                None => return Ok(None),
                Some(Some(unreadable)) => return Ok(Some(unreadable)),
                Some(None) => {}
            }
        }
    }

    fn skip(&mut self, mut n: usize) -> anyhow::Result<()> {
        while n > 0 {
            if !self.buffered.is_empty() {
                let k = n.min(self.buffered.len());
                self.buffered.drain(..k);
                n -= k;
                continue;
            }
            if let Some(shard) = &mut self.current {
                if shard.next_group < shard.reader.num_row_groups() {
                    let rows = shard.group_rows(shard.next_group);
                    if rows <= n {
                        // The footer says how many positions the group holds: no decoding.
                        shard.next_group += 1;
                        shard.next_row += rows as u64;
                        n -= rows;
                    } else {
                        self.decode_next_group();
                    }
                    continue;
                }
                self.current = None;
            }
            match self.open_next()? {
                None => break,
                Some(Some(_unreadable)) => n -= 1,
                Some(None) => {}
            }
        }
        Ok(())
    }
}

/// The file name of a shard, used in keys and messages.
fn shard_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string())
}

/// A leaf column to read.
#[derive(Debug, Clone)]
struct Leaf {
    /// Index among the schema's leaf columns.
    index: usize,
    /// The dotted path, for messages.
    path: String,
    /// Definition level of a present value.
    max_def: i16,
}

#[derive(Debug, Clone)]
struct Columns {
    /// `None` with [`ParquetOptions::skip_images`].
    image: Option<Leaf>,
    text: Option<Leaf>,
    label: Option<Leaf>,
    group: Option<Leaf>,
}

/// One open shard.
struct Shard {
    name: String,
    reader: SerializedFileReader<File>,
    columns: Columns,
    /// `ClassLabel` names of the label column, when the metadata has them.
    class_names: Option<Vec<String>>,
    /// `ClassLabel` names of the group column, likewise.
    group_names: Option<Vec<String>>,
    next_group: usize,
    /// Row index (within the shard) of the first row of `next_group`.
    next_row: u64,
}

impl Shard {
    /// Opens a shard: `Err(reason)` when its footer cannot be read (an unreadable shard),
    /// `Ok(Err(..))` when it lacks a configured column (an unusable source).
    fn open(
        path: &Path,
        name: String,
        opts: &ParquetOptions,
    ) -> Result<anyhow::Result<Self>, String> {
        let file = File::open(path).map_err(|e| format!("{name}: cannot open shard: {e}"))?;
        // The footer parser is not written for hostile input; a panic there is damage too.
        let reader = catch_unwind(AssertUnwindSafe(|| SerializedFileReader::new(file)))
            .map_err(|p| format!("{name}: the footer decoder failed ({})", panic_text(&*p)))?
            .map_err(|e| format!("{name}: no valid parquet footer ({e})"))?;
        let metadata = reader.metadata().file_metadata();
        let columns = match resolve_columns(&name, metadata.schema_descr(), opts) {
            Ok(columns) => columns,
            Err(e) => return Ok(Err(e)),
        };
        let features = metadata
            .key_value_metadata()
            .and_then(|pairs| pairs.iter().find(|kv| kv.key == "huggingface"))
            .and_then(|kv| kv.value.as_deref());
        let names_of = |column: &Option<String>| match (column, features) {
            (Some(column), Some(json)) => class_names(&name, json, column),
            _ => None,
        };
        let class_names = names_of(&opts.label_column);
        let group_names = names_of(&opts.group_column);
        Ok(Ok(Self {
            name,
            reader,
            columns,
            class_names,
            group_names,
            next_group: 0,
            next_row: 0,
        }))
    }

    fn group_rows(&self, group: usize) -> usize {
        self.reader.metadata().row_group(group).num_rows().max(0) as usize
    }

    /// Decodes the next row group into entries, one per row its footer declares.
    fn decode_group(&mut self) -> Vec<Entry> {
        let group = self.next_group;
        let rows = self.group_rows(group);
        let first_row = self.next_row;
        self.next_group += 1;
        self.next_row += rows as u64;
        let decoded = catch_unwind(AssertUnwindSafe(|| self.read_group(group, rows)))
            .unwrap_or_else(|p| Err(format!("the decoder failed ({})", panic_text(&*p))));
        match decoded {
            Ok(values) => self.build_rows(first_row, values),
            Err(why) => {
                let reason = format!(
                    "{}: row group {group} (rows {first_row}..{}, {rows} positions) cannot be \
                     read: {why}",
                    self.name,
                    first_row + rows as u64
                );
                (0..rows as u64)
                    .map(|i| Entry::Unreadable {
                        key: format!("{}:{}", self.name, first_row + i),
                        reason: reason.clone(),
                    })
                    .collect()
            }
        }
    }

    /// The configured columns of one row group, one value (or null) per row.
    fn read_group(&self, group: usize, rows: usize) -> Result<GroupValues, String> {
        let rg = self
            .reader
            .get_row_group(group)
            .map_err(|e| e.to_string())?;
        let image = match &self.columns.image {
            Some(leaf) => Some(read_bytes(rg.as_ref(), leaf, rows)?),
            None => None,
        };
        let text = match &self.columns.text {
            Some(leaf) => Some(read_bytes(rg.as_ref(), leaf, rows)?),
            None => None,
        };
        let label = match &self.columns.label {
            Some(leaf) => Some(read_label(rg.as_ref(), leaf, rows)?),
            None => None,
        };
        let group = match &self.columns.group {
            Some(leaf) => Some(read_label(rg.as_ref(), leaf, rows)?),
            None => None,
        };
        Ok(GroupValues {
            rows,
            image,
            text,
            label,
            group,
        })
    }

    fn build_rows(&self, first_row: u64, values: GroupValues) -> Vec<Entry> {
        let GroupValues {
            rows,
            image,
            text,
            label,
            group,
        } = values;
        let mut image = image.map(Vec::into_iter);
        let mut text = text.map(Vec::into_iter);
        let mut label = label.map(Vec::into_iter);
        let mut group = group.map(Vec::into_iter);
        (0..rows)
            .map(|i| {
                let key = format!("{}:{}", self.name, first_row + i as u64);
                let image = image.as_mut().and_then(|t| t.next()).flatten();
                let text = text.as_mut().and_then(|t| t.next()).flatten();
                let label = label.as_mut().and_then(|l| l.next()).flatten();
                let group = group.as_mut().and_then(|g| g.next()).flatten();
                self.build_row(key, image, text, label, group)
            })
            .collect()
    }

    fn build_row(
        &self,
        key: String,
        image: Option<Vec<u8>>,
        text: Option<Vec<u8>>,
        label: Option<LabelValue>,
        group: Option<LabelValue>,
    ) -> Entry {
        let unreadable = |key: String, reason: String| Entry::Unreadable { key, reason };
        let text = match text.map(String::from_utf8).transpose() {
            Ok(text) => text,
            Err(_) => {
                let column = &self.columns.text.as_ref().map_or("", |l| l.path.as_str());
                return unreadable(key, format!("text column `{column}` is not UTF-8"));
            }
        };
        let label = match label.map(|v| label_text(v, self.class_names.as_deref())) {
            None => None,
            Some(Ok(label)) => Some(label),
            Some(Err(why)) => return unreadable(key, format!("label {why}")),
        };
        let group = match group.map(|v| label_text(v, self.group_names.as_deref())) {
            None => None,
            Some(Ok(group)) => Some(group),
            Some(Err(why)) => return unreadable(key, format!("group {why}")),
        };
        if image.is_none() && text.is_none() {
            return unreadable(key, "no image bytes and no text".to_string());
        }
        Entry::Item(Item {
            key,
            image,
            text,
            label,
            group,
        })
    }
}

enum LabelValue {
    Int(i64),
    Bool(bool),
    Text(Vec<u8>),
}

/// A label (or group) value as text: an integer named through the column's `ClassLabel` names
/// when it has them, a boolean as `true`/`false`, a string as it is; `Err` completes "label …"
/// with why the value has no text.
fn label_text(value: LabelValue, names: Option<&[String]>) -> Result<String, String> {
    match value {
        // As the reference: −1 ("no label") is an empty label.
        LabelValue::Int(-1) => Ok(String::new()),
        LabelValue::Int(v) => match names {
            None => Ok(v.to_string()),
            Some(names) => usize::try_from(v)
                .ok()
                .and_then(|i| names.get(i))
                .cloned()
                .ok_or_else(|| format!("{v} has no class name ({} names)", names.len())),
        },
        LabelValue::Bool(b) => Ok(b.to_string()),
        LabelValue::Text(bytes) => String::from_utf8(bytes).map_err(|_| "is not UTF-8".to_string()),
    }
}

struct GroupValues {
    rows: usize,
    image: Option<Vec<Option<Vec<u8>>>>,
    text: Option<Vec<Option<Vec<u8>>>>,
    label: Option<Vec<Option<LabelValue>>>,
    group: Option<Vec<Option<LabelValue>>>,
}

/// Finds the configured columns among the schema's leaves.
fn resolve_columns(
    shard: &str,
    schema: &SchemaDescriptor,
    opts: &ParquetOptions,
) -> anyhow::Result<Columns> {
    let top_level: Vec<&str> = schema
        .root_schema()
        .get_fields()
        .iter()
        .map(|f| f.name())
        .collect();
    let wanted = [
        Some(opts.image_column()).filter(|_| !opts.skip_images),
        opts.text_column.as_deref(),
        opts.label_column.as_deref(),
        opts.group_column.as_deref(),
    ];
    let missing: Vec<String> = wanted
        .iter()
        .flatten()
        .filter(|name| !top_level.contains(name))
        .map(|name| format!("`{name}`"))
        .collect();
    if !missing.is_empty() {
        bail!(
            "{shard} has no column {}; its columns are: {}",
            missing.join(", "),
            top_level.join(", ")
        );
    }
    let leaf = |parts: &[&str], types: &[PhysicalType]| -> Option<Leaf> {
        schema
            .columns()
            .iter()
            .enumerate()
            .find_map(|(index, col)| {
                let path = col.path().parts();
                (path.len() == parts.len()
                    && path.iter().zip(parts).all(|(a, b)| a == b)
                    && types.contains(&col.physical_type()))
                .then(|| Leaf {
                    index,
                    path: path.join("."),
                    max_def: col.max_def_level(),
                })
            })
    };
    let check_flat = |leaf: Leaf| -> anyhow::Result<Leaf> {
        // A list column would give several values per row.
        if schema.column(leaf.index).max_rep_level() > 0 {
            bail!(
                "{shard}: column `{}` is repeated (a list), which is not supported",
                leaf.path
            );
        }
        Ok(leaf)
    };
    let image_name = opts.image_column();
    let binary = [PhysicalType::BYTE_ARRAY];
    let image = match opts.skip_images {
        true => None,
        false => Some(
            leaf(&[image_name, "bytes"], &binary)
                .or_else(|| leaf(&[image_name], &binary))
                .ok_or_else(|| {
                    anyhow::anyhow!(
                        "{shard}: column `{image_name}` is neither binary nor a struct with a \
                         binary `bytes` field"
                    )
                })?,
        ),
    };
    let text =
        match &opts.text_column {
            Some(name) => Some(leaf(&[name], &binary).ok_or_else(|| {
                anyhow::anyhow!("{shard}: column `{name}` is not a string column")
            })?),
            None => None,
        };
    let label_like = |column: &Option<String>| -> anyhow::Result<Option<Leaf>> {
        let Some(name) = column else {
            return Ok(None);
        };
        let types = [
            PhysicalType::INT32,
            PhysicalType::INT64,
            PhysicalType::BOOLEAN,
            PhysicalType::BYTE_ARRAY,
        ];
        let found = leaf(&[name], &types).ok_or_else(|| {
            anyhow::anyhow!(
                "{shard}: column `{name}` is neither an integer, a boolean nor a string"
            )
        })?;
        check_flat(found).map(Some)
    };
    Ok(Columns {
        image: image.map(check_flat).transpose()?,
        text: text.map(check_flat).transpose()?,
        label: label_like(&opts.label_column)?,
        group: label_like(&opts.group_column)?,
    })
}

/// The `ClassLabel` names of `column` in the datasets library's metadata, if it has them.
fn class_names(shard: &str, json: &str, column: &str) -> Option<Vec<String>> {
    let value: serde_json::Value = match serde_json::from_str(json) {
        Ok(value) => value,
        Err(e) => {
            tracing::warn!("{shard}: unreadable `huggingface` metadata ({e}); labels stay numbers");
            return None;
        }
    };
    let feature = value.get("info")?.get("features")?.get(column)?;
    if feature.get("_type")?.as_str()? != "ClassLabel" {
        return None;
    }
    feature
        .get("names")?
        .as_array()?
        .iter()
        .map(|n| n.as_str().map(str::to_string))
        .collect()
}

/// Reads `rows` records of a leaf through a typed reader: values where the definition level
/// is the maximum, `None` elsewhere.
fn read_leaf<T: DataType>(
    mut reader: ColumnReaderImpl<T>,
    leaf: &Leaf,
    rows: usize,
) -> Result<Vec<Option<T::T>>, String> {
    let mut defs = Vec::with_capacity(rows);
    let mut values = Vec::with_capacity(rows);
    let mut records = 0;
    while records < rows {
        let (read, _, _) = reader
            .read_records(rows - records, Some(&mut defs), None, &mut values)
            .map_err(|e| format!("column `{}`: {e}", leaf.path))?;
        if read == 0 {
            break;
        }
        records += read;
    }
    if records != rows {
        return Err(format!(
            "column `{}` holds {records} rows where the footer says {rows}",
            leaf.path
        ));
    }
    if leaf.max_def == 0 {
        return Ok(values.into_iter().map(Some).collect());
    }
    let present = defs.iter().filter(|&&d| d == leaf.max_def).count();
    if defs.len() != rows || present != values.len() {
        return Err(format!(
            "column `{}`: {} levels and {} values for {rows} rows",
            leaf.path,
            defs.len(),
            values.len()
        ));
    }
    let mut values = values.into_iter();
    Ok(defs
        .iter()
        .map(|&d| {
            if d == leaf.max_def {
                values.next()
            } else {
                None
            }
        })
        .collect())
}

fn read_bytes(
    rg: &dyn RowGroupReader,
    leaf: &Leaf,
    rows: usize,
) -> Result<Vec<Option<Vec<u8>>>, String> {
    match column_reader(rg, leaf)? {
        ColumnReader::ByteArrayColumnReader(reader) => Ok(read_leaf(reader, leaf, rows)?
            .into_iter()
            .map(|v| v.map(|b| b.data().to_vec()))
            .collect()),
        _ => Err(format!("column `{}` is not binary", leaf.path)),
    }
}

fn read_label(
    rg: &dyn RowGroupReader,
    leaf: &Leaf,
    rows: usize,
) -> Result<Vec<Option<LabelValue>>, String> {
    let values = match column_reader(rg, leaf)? {
        ColumnReader::Int32ColumnReader(reader) => read_leaf(reader, leaf, rows)?
            .into_iter()
            .map(|v| v.map(|v| LabelValue::Int(v.into())))
            .collect(),
        ColumnReader::Int64ColumnReader(reader) => read_leaf(reader, leaf, rows)?
            .into_iter()
            .map(|v| v.map(LabelValue::Int))
            .collect(),
        ColumnReader::BoolColumnReader(reader) => read_leaf(reader, leaf, rows)?
            .into_iter()
            .map(|v| v.map(LabelValue::Bool))
            .collect(),
        ColumnReader::ByteArrayColumnReader(reader) => read_leaf(reader, leaf, rows)?
            .into_iter()
            .map(|v| v.map(|b| LabelValue::Text(b.data().to_vec())))
            .collect(),
        _ => {
            return Err(format!(
                "column `{}` is not an integer, boolean or string",
                leaf.path
            ))
        }
    };
    Ok(values)
}

fn column_reader(rg: &dyn RowGroupReader, leaf: &Leaf) -> Result<ColumnReader, String> {
    rg.get_column_reader(leaf.index)
        .map_err(|e| format!("column `{}`: {e}", leaf.path))
}

/// The message of a caught panic.
fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "panic".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ::parquet::basic::Compression;
    use ::parquet::data_type::{BoolType, ByteArray, ByteArrayType, Int64Type};
    use ::parquet::file::metadata::KeyValue;
    use ::parquet::file::properties::WriterProperties;
    use ::parquet::file::writer::SerializedFileWriter;
    use ::parquet::schema::parser::parse_message_type;
    use std::sync::Arc;

    /// One row as the datasets library writes it; `image: Some(None)` is an image struct
    /// whose `bytes` is null.
    #[derive(Clone, Default)]
    struct Row {
        image: Option<Option<Vec<u8>>>,
        label: Option<i64>,
        caption: Option<Vec<u8>>,
    }

    fn row(image: &[u8], label: Option<i64>, caption: Option<&str>) -> Row {
        Row {
            image: Some(Some(image.to_vec())),
            label,
            caption: caption.map(|c| c.as_bytes().to_vec()),
        }
    }

    const SCHEMA: &str = "
        message hf {
            optional group image {
                optional binary bytes;
                optional binary path (STRING);
            }
            optional int64 label;
            optional binary caption (STRING);
        }";

    const NAMES: &str = r#"{"info": {"features": {
        "image": {"_type": "Image"},
        "label": {"names": ["tench, Tinca tinca", "goldfish", "white shark"], "_type": "ClassLabel"},
        "caption": {"dtype": "string", "_type": "Value"}}}}"#;

    /// Writes one row group per slice of `groups`.
    fn write_shard(path: &Path, groups: &[&[Row]], compression: Compression, names: bool) {
        let schema = Arc::new(parse_message_type(SCHEMA).unwrap());
        let metadata = names.then(|| vec![KeyValue::new("huggingface".into(), NAMES.to_string())]);
        let props = WriterProperties::builder()
            .set_compression(compression)
            .set_dictionary_enabled(false)
            .set_key_value_metadata(metadata)
            .build();
        let file = File::create(path).unwrap();
        let mut writer = SerializedFileWriter::new(file, schema, Arc::new(props)).unwrap();
        for rows in groups {
            let mut group = writer.next_row_group().unwrap();
            // image.bytes, image.path, label, caption: the leaves in schema order.
            let mut bytes = (vec![], vec![]);
            let mut paths = (vec![], vec![]);
            let mut labels = (vec![], vec![]);
            let mut captions = (vec![], vec![]);
            for (i, r) in rows.iter().enumerate() {
                match &r.image {
                    None => {
                        bytes.1.push(0);
                        paths.1.push(0);
                    }
                    Some(b) => {
                        match b {
                            Some(b) => {
                                bytes.0.push(ByteArray::from(b.clone()));
                                bytes.1.push(2);
                            }
                            None => bytes.1.push(1),
                        }
                        paths.0.push(ByteArray::from(format!("{i}.jpg").as_str()));
                        paths.1.push(2);
                    }
                }
                match r.label {
                    Some(l) => {
                        labels.0.push(l);
                        labels.1.push(1);
                    }
                    None => labels.1.push(0),
                }
                match &r.caption {
                    Some(c) => {
                        captions.0.push(ByteArray::from(c.clone()));
                        captions.1.push(1);
                    }
                    None => captions.1.push(0),
                }
            }
            for (values, defs) in [bytes, paths] {
                let mut col = group.next_column().unwrap().unwrap();
                col.typed::<ByteArrayType>()
                    .write_batch(&values, Some(&defs), None)
                    .unwrap();
                col.close().unwrap();
            }
            let mut col = group.next_column().unwrap().unwrap();
            col.typed::<Int64Type>()
                .write_batch(&labels.0, Some(&labels.1), None)
                .unwrap();
            col.close().unwrap();
            let mut col = group.next_column().unwrap().unwrap();
            col.typed::<ByteArrayType>()
                .write_batch(&captions.0, Some(&captions.1), None)
                .unwrap();
            col.close().unwrap();
            group.close().unwrap();
        }
        writer.close().unwrap();
    }

    fn opts() -> ParquetOptions {
        ParquetOptions {
            image_column: None,
            text_column: Some("caption".into()),
            label_column: Some("label".into()),
            group_column: None,
            skip_images: false,
        }
    }

    fn read_all(source: &mut dyn Source) -> Vec<Entry> {
        let mut out = Vec::new();
        while let Some(entry) = source.next_entry().unwrap() {
            out.push(entry);
        }
        out
    }

    fn item(key: &str, image: Option<&[u8]>, text: Option<&str>, label: Option<&str>) -> Entry {
        Entry::Item(Item {
            key: key.to_string(),
            image: image.map(|b| b.to_vec()),
            text: text.map(str::to_string),
            label: label.map(str::to_string),
            group: None,
        })
    }

    /// Keys and kinds: `key` for items, `!key` for unreadable entries.
    fn outline(entries: &[Entry]) -> Vec<String> {
        entries
            .iter()
            .map(|e| match e {
                Entry::Item(item) => item.key.clone(),
                Entry::Unreadable { key, .. } => format!("!{key}"),
            })
            .collect()
    }

    fn reason(entry: &Entry) -> &str {
        match entry {
            Entry::Unreadable { reason, .. } => reason,
            Entry::Item(item) => panic!("{} is readable", item.key),
        }
    }

    /// Three row groups (3, 2 and 4 rows) covering labels, nulls and bad rows.
    fn imagenet_like(path: &Path, compression: Compression, names: bool) {
        let g0 = [
            row(b"img-0", Some(0), Some("first")),
            row(b"img-1", Some(2), None),
            row(b"img-2", Some(-1), Some("no label")),
        ];
        let g1 = [
            row(b"img-3", None, None),
            Row {
                image: Some(None),
                label: Some(1),
                caption: Some(b"text only".to_vec()),
            },
        ];
        let g2 = [
            row(b"img-5", Some(7), None),
            Row {
                image: None,
                label: Some(1),
                caption: None,
            },
            Row {
                image: Some(Some(b"img-7".to_vec())),
                label: Some(1),
                caption: Some(b"caf\xe9".to_vec()),
            },
            row(b"img-8", Some(1), Some("last")),
        ];
        write_shard(path, &[&g0, &g1, &g2], compression, names);
    }

    #[test]
    fn rows_become_items_with_class_names() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.parquet");
        let b = dir.path().join("b.parquet");
        imagenet_like(&a, Compression::SNAPPY, true);
        write_shard(
            &b,
            &[&[row(b"img-b", Some(5), Some("b"))]],
            Compression::UNCOMPRESSED,
            false,
        );
        let entries = read_all(&mut ParquetSource::open(vec![a, b], opts()).unwrap());
        assert_eq!(
            outline(&entries),
            [
                "a.parquet:0",
                "a.parquet:1",
                "a.parquet:2",
                "a.parquet:3",
                "a.parquet:4",
                "!a.parquet:5",
                "!a.parquet:6",
                "!a.parquet:7",
                "a.parquet:8",
                "b.parquet:0",
            ]
        );
        assert_eq!(
            entries[..5],
            [
                item(
                    "a.parquet:0",
                    Some(b"img-0"),
                    Some("first"),
                    Some("tench, Tinca tinca")
                ),
                item("a.parquet:1", Some(b"img-1"), None, Some("white shark")),
                // −1 is "no label": an empty label, as the reference's int2str wrapper gives.
                item("a.parquet:2", Some(b"img-2"), Some("no label"), Some("")),
                item("a.parquet:3", Some(b"img-3"), None, None),
                // An image struct whose bytes are null: the text alone.
                item("a.parquet:4", None, Some("text only"), Some("goldfish")),
            ]
        );
        assert_eq!(reason(&entries[5]), "label 7 has no class name (3 names)");
        assert_eq!(reason(&entries[6]), "no image bytes and no text");
        assert_eq!(reason(&entries[7]), "text column `caption` is not UTF-8");
        assert_eq!(
            entries[8],
            item(
                "a.parquet:8",
                Some(b"img-8"),
                Some("last"),
                Some("goldfish")
            )
        );
        // Without ClassLabel metadata the integer is the label.
        assert_eq!(
            entries[9],
            item("b.parquet:0", Some(b"img-b"), Some("b"), Some("5"))
        );
    }

    #[test]
    fn only_the_configured_columns_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.parquet");
        imagenet_like(&a, Compression::SNAPPY, true);
        let mut source = ParquetSource::open(vec![a], ParquetOptions::default()).unwrap();
        let entries = read_all(&mut source);
        // Images only: the bad label, the bad text and the text-only row do not matter.
        assert_eq!(
            outline(&entries),
            [
                "a.parquet:0",
                "a.parquet:1",
                "a.parquet:2",
                "a.parquet:3",
                "!a.parquet:4",
                "a.parquet:5",
                "!a.parquet:6",
                "a.parquet:7",
                "a.parquet:8"
            ]
        );
        assert_eq!(entries[5], item("a.parquet:5", Some(b"img-5"), None, None));
    }

    #[test]
    fn a_truncated_shard_is_one_unreadable_entry() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.parquet");
        let b = dir.path().join("b.parquet");
        imagenet_like(&a, Compression::SNAPPY, true);
        imagenet_like(&b, Compression::SNAPPY, true);
        let bytes = std::fs::read(&a).unwrap();
        std::fs::write(&a, &bytes[..bytes.len() / 2]).unwrap();
        let entries = read_all(&mut ParquetSource::open(vec![a, b], opts()).unwrap());
        assert_eq!(entries.len(), 1 + 9);
        assert_eq!(outline(&entries[..2]), ["!a.parquet", "b.parquet:0"]);
        let r = reason(&entries[0]);
        assert!(r.starts_with("a.parquet: no valid parquet footer"), "{r}");
    }

    /// Damages the definition levels at the start of the first data page of leaf 0
    /// (`image.bytes`) in `group` of an uncompressed shard.
    fn damage_data_page(path: &Path, group: usize) {
        let reader = SerializedFileReader::new(File::open(path).unwrap()).unwrap();
        let chunk = reader.metadata().row_group(group).column(0).clone();
        assert_eq!(chunk.dictionary_page_offset(), None);
        let page = reader
            .get_row_group(group)
            .unwrap()
            .get_column_page_reader(0)
            .unwrap()
            .get_next_page()
            .unwrap()
            .unwrap();
        // One uncompressed page: the chunk is its header then its payload.
        let header_len = chunk.compressed_size() as usize - page.buffer().len();
        let payload = chunk.data_page_offset() as usize + header_len;
        let mut bytes = std::fs::read(path).unwrap();
        // A V1 page starts with the byte length of its definition levels: for a few rows, a
        // few bytes. Claiming about 2 GiB makes the page unreadable.
        let levels = u32::from_le_bytes(bytes[payload..payload + 4].try_into().unwrap());
        assert!(levels > 0 && levels < 16, "{levels}");
        bytes[payload..payload + 4].copy_from_slice(&0x7fff_fff0u32.to_le_bytes());
        std::fs::write(path, bytes).unwrap();
    }

    #[test]
    fn a_corrupt_row_group_makes_its_rows_unreadable() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.parquet");
        imagenet_like(&a, Compression::UNCOMPRESSED, true);
        let good = read_all(&mut ParquetSource::open(vec![a.clone()], opts()).unwrap());
        damage_data_page(&a, 1);
        let entries = read_all(&mut ParquetSource::open(vec![a], opts()).unwrap());
        // Group 1 holds rows 3 and 4: both positions are unreadable, the others unchanged.
        assert_eq!(entries.len(), 9);
        assert_eq!(entries[..3], good[..3]);
        assert_eq!(entries[5..], good[5..]);
        assert_eq!(outline(&entries[3..5]), ["!a.parquet:3", "!a.parquet:4"]);
        let r = reason(&entries[3]);
        assert!(
            r.starts_with("a.parquet: row group 1 (rows 3..5, 2 positions) cannot be read"),
            "{r}"
        );
        assert!(r.contains("image.bytes"), "{r}");
    }

    #[test]
    fn skip_equals_reading_and_dropping() {
        let dir = tempfile::tempdir().unwrap();
        let paths: Vec<PathBuf> = ["a", "b", "c", "d"]
            .iter()
            .map(|n| dir.path().join(format!("{n}.parquet")))
            .collect();
        imagenet_like(&paths[0], Compression::SNAPPY, true);
        imagenet_like(&paths[1], Compression::SNAPPY, true);
        let bytes = std::fs::read(&paths[1]).unwrap();
        std::fs::write(&paths[1], &bytes[..bytes.len() - 10]).unwrap();
        imagenet_like(&paths[2], Compression::UNCOMPRESSED, false);
        damage_data_page(&paths[2], 2);
        imagenet_like(&paths[3], Compression::UNCOMPRESSED, true);
        let all = read_all(&mut ParquetSource::open(paths.clone(), opts()).unwrap());
        assert_eq!(all.len(), 9 + 1 + 9 + 9);
        for n in 0..=all.len() + 2 {
            let mut source = ParquetSource::open(paths.clone(), opts()).unwrap();
            source.skip(n).unwrap();
            assert_eq!(
                read_all(&mut source),
                all[n.min(all.len())..],
                "after skipping {n}"
            );
        }
        // Whole row groups and whole shards are skipped from their footers alone.
        let mut source = ParquetSource::open(paths.clone(), opts()).unwrap();
        source.skip(9 + 1 + 3 + 2 + 4 + 3).unwrap();
        assert_eq!(source.decoded_groups, 0);
        assert_eq!(source.next_entry().unwrap().as_ref(), Some(&all[22]));
        assert_eq!(source.decoded_groups, 1);
        // A skip that ends inside a group decodes that group only.
        let mut source = ParquetSource::open(paths, opts()).unwrap();
        source.skip(4).unwrap();
        assert_eq!(source.decoded_groups, 1);
        source.skip(2).unwrap();
        assert_eq!(source.decoded_groups, 2);
        assert_eq!(source.next_entry().unwrap().as_ref(), Some(&all[6]));
    }

    #[test]
    fn missing_columns_are_an_error_naming_the_existing_ones() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.parquet");
        imagenet_like(&a, Compression::SNAPPY, true);
        let wrong = ParquetOptions {
            image_column: Some("jpg".into()),
            text_column: Some("caption".into()),
            label_column: Some("labels".into()),
            group_column: None,
            skip_images: false,
        };
        let err = ParquetSource::open(vec![a.clone()], wrong).err().unwrap();
        assert_eq!(
            err.to_string(),
            "a.parquet has no column `jpg`, `labels`; its columns are: image, label, caption"
        );
        // The check uses the first shard with a readable footer.
        let broken = dir.path().join("0.parquet");
        std::fs::write(&broken, b"PAR1 not really").unwrap();
        let wrong = ParquetOptions {
            text_column: Some("text".into()),
            ..Default::default()
        };
        let err = ParquetSource::open(vec![broken, a.clone()], wrong)
            .err()
            .unwrap();
        assert!(err.to_string().contains("no column `text`"), "{err}");
        // A column of the wrong kind.
        let wrong = ParquetOptions {
            image_column: Some("label".into()),
            ..Default::default()
        };
        let err = ParquetSource::open(vec![a.clone()], wrong).err().unwrap();
        assert!(
            err.to_string()
                .contains("`label` is neither binary nor a struct"),
            "{err}"
        );
        assert!(ParquetSource::open(vec![], opts()).is_err());
        // Without images, an image column is neither needed nor read.
        let texts_only = ParquetOptions {
            image_column: Some("jpg".into()),
            text_column: Some("caption".into()),
            skip_images: true,
            ..Default::default()
        };
        let entries = read_all(&mut ParquetSource::open(vec![a], texts_only).unwrap());
        // The rows with a text are items (without their images); the others have nothing to
        // embed, and row 7's text is not UTF-8.
        let keys: Vec<String> = ["0", "!1", "2", "!3", "4", "!5", "!6", "!7", "8"]
            .iter()
            .map(|k| match k.strip_prefix('!') {
                Some(k) => format!("!a.parquet:{k}"),
                None => format!("a.parquet:{k}"),
            })
            .collect();
        assert_eq!(outline(&entries), keys);
        assert!(entries.iter().all(|e| match e {
            Entry::Item(item) => item.image.is_none() && item.text.is_some(),
            Entry::Unreadable { .. } => true,
        }));
    }

    #[test]
    fn boolean_columns_and_a_group_beside_the_label() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("faces.parquet");
        let schema = Arc::new(
            parse_message_type(
                "message s { required binary jpg; optional boolean Smiling; optional boolean Male; }",
            )
            .unwrap(),
        );
        let props = Arc::new(WriterProperties::builder().build());
        let mut writer =
            SerializedFileWriter::new(File::create(&path).unwrap(), schema, props).unwrap();
        let mut group = writer.next_row_group().unwrap();
        let mut col = group.next_column().unwrap().unwrap();
        col.typed::<ByteArrayType>()
            .write_batch(
                &[
                    ByteArray::from("a"),
                    ByteArray::from("b"),
                    ByteArray::from("c"),
                ],
                None,
                None,
            )
            .unwrap();
        col.close().unwrap();
        let mut col = group.next_column().unwrap().unwrap();
        col.typed::<BoolType>()
            .write_batch(&[true, false, true], Some(&[1, 1, 1]), None)
            .unwrap();
        col.close().unwrap();
        // The third row has no value of `Male`: an item with no group.
        let mut col = group.next_column().unwrap().unwrap();
        col.typed::<BoolType>()
            .write_batch(&[false, true], Some(&[1, 1, 0]), None)
            .unwrap();
        col.close().unwrap();
        group.close().unwrap();
        writer.close().unwrap();
        let opts = ParquetOptions {
            image_column: Some("jpg".into()),
            label_column: Some("Smiling".into()),
            group_column: Some("Male".into()),
            ..Default::default()
        };
        let entries = read_all(&mut ParquetSource::open(vec![path.clone()], opts).unwrap());
        let labelled = |key: &str, image: &[u8], label: &str, group: Option<&str>| {
            Entry::Item(Item {
                key: key.into(),
                image: Some(image.to_vec()),
                text: None,
                label: Some(label.into()),
                group: group.map(String::from),
            })
        };
        assert_eq!(
            entries,
            [
                labelled("faces.parquet:0", b"a", "true", Some("false")),
                labelled("faces.parquet:1", b"b", "false", Some("true")),
                labelled("faces.parquet:2", b"c", "true", None),
            ]
        );
        // A missing group column is named with the columns there are.
        let wrong = ParquetOptions {
            image_column: Some("jpg".into()),
            group_column: Some("Female".into()),
            ..Default::default()
        };
        let err = ParquetSource::open(vec![path], wrong).err().unwrap();
        assert_eq!(
            err.to_string(),
            "faces.parquet has no column `Female`; its columns are: jpg, Smiling, Male"
        );
        // An integer group column is named through its ClassLabel names, as a label is; a
        // value without a name makes the row unreadable.
        let a = dir.path().join("a.parquet");
        imagenet_like(&a, Compression::SNAPPY, true);
        let by_class = ParquetOptions {
            group_column: Some("label".into()),
            ..Default::default()
        };
        let entries = read_all(&mut ParquetSource::open(vec![a], by_class).unwrap());
        let groups: Vec<Option<&str>> = entries
            .iter()
            .map(|e| match e {
                Entry::Item(item) => item.group.as_deref(),
                Entry::Unreadable { .. } => Some("!"),
            })
            .collect();
        assert_eq!(
            groups,
            [
                Some("tench, Tinca tinca"),
                Some("white shark"),
                Some(""),
                None,
                Some("!"),
                Some("!"),
                Some("!"),
                Some("goldfish"),
                Some("goldfish")
            ]
        );
        assert_eq!(reason(&entries[5]), "group 7 has no class name (3 names)");
    }

    #[test]
    fn a_plain_binary_image_column_and_string_labels() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.parquet");
        let schema = Arc::new(
            parse_message_type("message s { required binary jpg; optional binary cls (STRING); }")
                .unwrap(),
        );
        let props = Arc::new(WriterProperties::builder().build());
        let mut writer =
            SerializedFileWriter::new(File::create(&path).unwrap(), schema, props).unwrap();
        let mut group = writer.next_row_group().unwrap();
        let mut col = group.next_column().unwrap().unwrap();
        col.typed::<ByteArrayType>()
            .write_batch(&[ByteArray::from("x"), ByteArray::from("y")], None, None)
            .unwrap();
        col.close().unwrap();
        let mut col = group.next_column().unwrap().unwrap();
        col.typed::<ByteArrayType>()
            .write_batch(&[ByteArray::from("cat")], Some(&[0, 1]), None)
            .unwrap();
        col.close().unwrap();
        group.close().unwrap();
        writer.close().unwrap();
        let opts = ParquetOptions {
            image_column: Some("jpg".into()),
            text_column: None,
            label_column: Some("cls".into()),
            group_column: None,
            skip_images: false,
        };
        let entries = read_all(&mut ParquetSource::open(vec![path], opts).unwrap());
        assert_eq!(
            entries,
            [
                item("s.parquet:0", Some(b"x"), None, None),
                item("s.parquet:1", Some(b"y"), None, Some("cat")),
            ]
        );
    }
}
