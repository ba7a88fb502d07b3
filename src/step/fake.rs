//! Step kinds for the engine's own tests: the parameter and output shapes of a generator
//! (`synth`), a file import (`import`) and a summary (`stats`), without their work, so that the
//! loader, planner and runner can be tested without the SAE domain.

use anyhow::{bail, Result};

use super::spec::{Default, OutputSpec, ParamSpec, ParamType, Role};
use super::{Metrics, Registry, Step, StepContext};

struct Generate;
struct ImportFile;
struct Summarise;

const INT: ParamSpec = ParamSpec {
    min: Some(1.0),
    gridable: true,
    ..ParamSpec::BASE
};

static GENERATE_PARAMS: &[ParamSpec] = &[
    ParamSpec { name: "dim", ..INT },
    ParamSpec {
        name: "n_features",
        ..INT
    },
    ParamSpec {
        name: "train",
        ..INT
    },
    ParamSpec {
        name: "test",
        ..INT
    },
    ParamSpec {
        name: "seed",
        default: Default::ExperimentSeed,
        ..INT
    },
];
static GENERATE_OUTPUTS: &[OutputSpec] = &[
    OutputSpec {
        name: "train",
        optional: false,
        doc: "",
    },
    OutputSpec {
        name: "test",
        optional: false,
        doc: "",
    },
];
static IMPORT_PARAMS: &[ParamSpec] = &[ParamSpec {
    name: "path",
    ty: ParamType::Str,
    role: Role::File,
    ..ParamSpec::BASE
}];
static SUMMARISE_PARAMS: &[ParamSpec] = &[ParamSpec {
    name: "data",
    ty: ParamType::Str,
    role: Role::Input,
    ..ParamSpec::BASE
}];
static ONE_OUTPUT: &[OutputSpec] = &[OutputSpec {
    name: "out",
    optional: false,
    doc: "",
}];

macro_rules! fake_kind {
    ($t:ty, $kind:literal, $params:ident, $outputs:ident) => {
        impl Step for $t {
            fn kind(&self) -> &'static str {
                $kind
            }
            fn version(&self) -> u32 {
                1
            }
            fn about(&self) -> &'static str {
                "a test kind"
            }
            fn params(&self) -> &'static [ParamSpec] {
                $params
            }
            fn outputs(&self) -> &'static [OutputSpec] {
                $outputs
            }
            fn run(&self, _ctx: &mut StepContext) -> Result<Metrics> {
                bail!("the engine's test kinds do not run")
            }
        }
    };
}

fake_kind!(Generate, "synth", GENERATE_PARAMS, GENERATE_OUTPUTS);
fake_kind!(ImportFile, "import", IMPORT_PARAMS, ONE_OUTPUT);
fake_kind!(Summarise, "stats", SUMMARISE_PARAMS, ONE_OUTPUT);

static KINDS: &[&dyn Step] = &[&Generate, &ImportFile, &Summarise];

/// The engine's test kinds.
pub fn registry() -> Registry {
    Registry::new(KINDS)
}
