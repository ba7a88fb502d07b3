//! Where one explorer's data comes from: a finished `top_examples` instance, the instance that
//! produced the matrix it ranked (for texts, item references and thumbnails), and the `name` and
//! `concepts` instances of the same SAE, when they have finished.

use crate::experiment::{Instance, InstanceInput};
use crate::report::figures::FinishedRecords;
use crate::store::{ArtifactRecord, Record};

/// A finished instance and its record.
pub type Finished<'a> = (&'a Instance, &'a Record);

/// The finished instances one explorer page is built from.
pub struct Sources<'a> {
    pub top: Finished<'a>,
    /// The SAE the examples were ranked with (its instance name and output).
    pub sae: &'a InstanceInput,
    /// The instance whose output is the ranked matrix (its record, when finished), and that
    /// output's name.
    pub producer: &'a Instance,
    pub data: Option<Finished<'a>>,
    pub data_output: String,
    /// The first finished `name` instance of the same SAE, in plan order.
    pub name: Option<Finished<'a>>,
    /// The first finished `concepts` instance of the same SAE, in plan order.
    pub concepts: Option<Finished<'a>>,
}

/// The first finished instance of `kind` whose `sae` input is `sae`.
fn of_same_sae<'a>(
    f: &FinishedRecords<'a>,
    kind: &str,
    sae: &InstanceInput,
) -> Option<Finished<'a>> {
    f.plan
        .instances
        .iter()
        .filter(|i| i.kind.kind() == kind && i.inputs.get("sae") == Some(sae))
        .find_map(|i| f.records[i.index].as_ref().map(|r| (i, r)))
}

impl<'a> Sources<'a> {
    /// The sources of a finished `top_examples` instance; `None` when it has no `sae` or `data`
    /// input (a plan the loader would not accept).
    pub fn find(f: &FinishedRecords<'a>, top: Finished<'a>) -> Option<Sources<'a>> {
        let sae = top.0.inputs.get("sae")?;
        let data_in = top.0.inputs.get("data")?;
        let data = f.records[data_in.instance]
            .as_ref()
            .map(|r| (&f.plan.instances[data_in.instance], r));
        Some(Sources {
            top,
            sae,
            producer: &f.plan.instances[data_in.instance],
            data,
            data_output: data_in.output.clone(),
            name: of_same_sae(f, "name", sae),
            concepts: of_same_sae(f, "concepts", sae),
        })
    }

    /// An output of the data's producer, when it wrote one (`texts`, `items`, `thumbnails`).
    pub fn data_output(&self, output: &str) -> Option<&'a ArtifactRecord> {
        self.data.and_then(|(_, r)| r.outputs.get(output))
    }

    /// The SAE as `instance.output`.
    pub fn sae_ref(&self, f: &FinishedRecords) -> String {
        format!(
            "{}.{}",
            f.plan.instances[self.sae.instance].name, self.sae.output
        )
    }

    /// Whether the examples carry their texts already (`top_examples` was given `texts`).
    pub fn texts_in_examples(&self) -> bool {
        self.top.0.inputs.contains_key("texts")
    }

    /// A fingerprint of everything the pages are made from: the keys and output hashes of the
    /// records read, and the page's own code. An explorer
    /// whose fingerprint is unchanged is not rewritten, so the report page stays cheap to
    /// rewrite during a run.
    pub fn fingerprint(&self, code: &str) -> String {
        let mut h = blake3::Hasher::new();
        h.update(code.as_bytes());
        for part in [Some(self.top), self.data, self.name, self.concepts] {
            h.update(b"\0");
            if let Some((_, r)) = part {
                h.update(r.key.as_bytes());
                for (name, a) in &r.outputs {
                    h.update(format!("\0{name}\0{}", a.hash).as_bytes());
                }
            }
        }
        h.update(b"\0");
        h.update(self.data_output.as_bytes());
        h.finalize().to_hex()[..32].to_string()
    }
}
