//! The reference code's checkpoint file-name convention (docs/reference.md §4.9): the architecture
//! of a `.pth` checkpoint is written only in its name,
//! `{n}_{d}_{ACT}{_RW|_UW}_{tied}_{normalize}_{soft_cap}_{train_stem}.pth`.
//!
//! The reference loader reads a Matryoshka checkpoint back as a plain `TopKReLU_64` SAE; msae
//! keeps what the name says (the `_RW`/`_UW` field) and rebuilds the Matryoshka model.

use crate::sae::config::{Arch, MsaeWeighting, TopkVariant};

/// What a reference checkpoint's file name says about the model.
#[derive(Debug, Clone, PartialEq)]
pub struct ReferenceName {
    pub n: usize,
    pub d: usize,
    pub arch: Arch,
    /// k of TopK/BatchTopK; the first nesting level of a Matryoshka model.
    pub k: Option<usize>,
    pub variant: TopkVariant,
    /// ReLU SAEs: the L1 weight written as the digits after the decimal point (`01` → 0.01).
    pub l1: Option<f64>,
    pub weighting: Option<MsaeWeighting>,
    pub tied: bool,
    pub normalize: bool,
    pub soft_cap: f64,
    /// The training file's stem (everything after the soft cap).
    pub train_stem: String,
}

const EXAMPLE: &str =
    "6144_768_TopKReLU_64_RW_False_False_0.0_cc3m_ViT-L~14_train_image_2905936_768.pth";

/// Parses a reference checkpoint file name (with or without folders and extension).
pub fn parse(file_name: &str) -> Result<ReferenceName, String> {
    let base = file_name.rsplit(['/', '\\']).next().unwrap_or(file_name);
    let stem = base
        .strip_suffix(".pth")
        .or_else(|| base.strip_suffix(".pt"))
        .unwrap_or(base);
    let fields: Vec<&str> = stem.split('_').collect();
    let bad = |why: String| {
        format!("`{base}` does not follow the reference checkpoint naming ({why}); expected a name like `{EXAMPLE}`")
    };
    let mut it = fields.iter().copied().peekable();
    let int = |what: &str, v: Option<&str>| -> Result<usize, String> {
        let v = v.ok_or_else(|| bad(format!("no {what}")))?;
        v.parse::<usize>()
            .ok()
            .filter(|x| *x > 0)
            .ok_or_else(|| bad(format!("{what} `{v}` is not a positive integer")))
    };
    let n = int("latent count", it.next())?;
    let d = int("input width", it.next())?;
    let act = it.next().ok_or_else(|| bad("no activation".into()))?;
    let (mut arch, mut k, mut variant, mut l1) = (Arch::Relu, None, TopkVariant::Relu, None);
    if act == "ReLU" {
        let digits = it
            .next()
            .ok_or_else(|| bad("no L1 digits after `ReLU`".into()))?;
        l1 = Some(
            format!("0.{digits}")
                .parse::<f64>()
                .map_err(|_| bad(format!("L1 digits `{digits}` are not digits")))?,
        );
    } else if let Some(rest) = act
        .strip_prefix("BatchTopK")
        .or_else(|| act.strip_prefix("TopK"))
    {
        arch = if act.starts_with("BatchTopK") {
            Arch::Batchtopk
        } else {
            Arch::Topk
        };
        variant = match rest {
            "" => TopkVariant::Plain,
            "ReLU" => TopkVariant::Relu,
            "abs" => TopkVariant::Abs,
            "absReLU" => TopkVariant::Absrelu,
            other => return Err(bad(format!("unknown top-k activation `{act}` (`{other}`)"))),
        };
        k = Some(int("k", it.next())?);
    } else if act == "JumpReLU" {
        arch = Arch::Jumprelu;
        if it.peek().is_some_and(|v| v.parse::<usize>().is_ok()) {
            it.next();
        }
    } else {
        return Err(bad(format!("unknown activation `{act}`")));
    }
    let weighting = match it.peek() {
        Some(&"RW") => Some(MsaeWeighting::Rw),
        Some(&"UW") => Some(MsaeWeighting::Uw),
        _ => None,
    };
    if weighting.is_some() {
        it.next();
        if arch != Arch::Topk {
            return Err(bad(format!("a Matryoshka suffix after `{act}`")));
        }
        arch = Arch::Msae;
    }
    let mut flag = |what: &str| -> Result<bool, String> {
        match it.next() {
            Some("True") => Ok(true),
            Some("False") => Ok(false),
            Some(v) => Err(bad(format!("{what} `{v}` is neither True nor False"))),
            None => Err(bad(format!("no {what} field"))),
        }
    };
    let tied = flag("tied")?;
    let normalize = flag("normalize")?;
    let cap = it.next().ok_or_else(|| bad("no soft-cap field".into()))?;
    let soft_cap = cap
        .parse::<f64>()
        .ok()
        .filter(|c| c.is_finite())
        .ok_or_else(|| bad(format!("soft cap `{cap}` is not a number")))?;
    let train_stem = it.collect::<Vec<_>>().join("_");
    Ok(ReferenceName {
        n,
        d,
        arch,
        k,
        variant,
        l1,
        weighting,
        tied,
        normalize,
        soft_cap,
        train_stem,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_examples_parse() {
        let r =
            parse("16384_512_ReLU_01_False_False_0.0_cc3m_ViT-B~16_train_image_2905936_512.pth")
                .unwrap();
        assert_eq!(
            (r.n, r.d, r.arch, r.l1),
            (16384, 512, Arch::Relu, Some(0.01))
        );
        assert_eq!(r.train_stem, "cc3m_ViT-B~16_train_image_2905936_512");
        let r = parse(
            "12288_768_TopKReLU_64_False_False_0.0_cc3m_ViT-L~14_train_image_2905936_768.pth",
        )
        .unwrap();
        assert_eq!(
            (r.arch, r.k, r.variant),
            (Arch::Topk, Some(64), TopkVariant::Relu)
        );
        assert_eq!(r.weighting, None);
        let r = parse(&format!("some/folder/{EXAMPLE}")).unwrap();
        assert_eq!((r.n, r.d, r.arch, r.k), (6144, 768, Arch::Msae, Some(64)));
        assert_eq!(r.weighting, Some(MsaeWeighting::Rw));
        assert!(!r.tied && !r.normalize && r.soft_cap == 0.0);
    }

    #[test]
    fn every_activation_family_maps_to_its_architecture() {
        let arch_of = |act: &str| {
            let r = parse(&format!("32_8_{act}_True_False_2.5_x.pth")).unwrap();
            (r.arch, r.k, r.variant, r.tied, r.soft_cap)
        };
        assert_eq!(
            arch_of("TopK_4"),
            (Arch::Topk, Some(4), TopkVariant::Plain, true, 2.5)
        );
        assert_eq!(arch_of("TopKabs_4").2, TopkVariant::Abs);
        assert_eq!(arch_of("TopKabsReLU_4").2, TopkVariant::Absrelu);
        assert_eq!(arch_of("BatchTopKReLU_8").0, Arch::Batchtopk);
        assert_eq!(arch_of("TopKReLU_4_UW").0, Arch::Msae);
        assert_eq!(arch_of("JumpReLU_32").0, Arch::Jumprelu);
        assert_eq!(
            parse("32_8_ReLU_003_False_False_0.0_x.pth").unwrap().l1,
            Some(0.003)
        );
    }

    #[test]
    fn malformed_names_say_what_is_wrong() {
        for (name, needle) in [
            ("model.pth", "latent count `model`"),
            (
                "32_8_Sigmoid_False_False_0.0_x.pth",
                "unknown activation `Sigmoid`",
            ),
            ("32_8_TopKReLU_k_False_False_0.0_x.pth", "k `k`"),
            ("32_8_ReLU_01_Maybe_False_0.0_x.pth", "tied `Maybe`"),
            ("32_8_ReLU_01_False_False_x.pth", "soft cap `x`"),
            (
                "32_8_BatchTopKReLU_4_RW_False_False_0.0_x.pth",
                "Matryoshka suffix",
            ),
            ("32_8_TopKReLU_4_False", "no normalize field"),
        ] {
            let e = parse(name).unwrap_err();
            assert!(e.contains(needle), "{name}: {e}");
            assert!(e.contains("expected a name like"), "{e}");
        }
    }
}
