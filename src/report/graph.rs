//! The instance DAG as Graphviz DOT or Mermaid text.

use std::fmt::Write as _;

use crate::experiment::Plan;

fn label(s: &str) -> String {
    s.replace('"', "'")
}

pub fn dot(plan: &Plan) -> String {
    let mut out =
        String::from("digraph msae {\n  rankdir=LR;\n  node [shape=box, fontname=monospace];\n");
    for inst in &plan.instances {
        let _ = writeln!(
            out,
            "  n{} [label=\"{}\\n({})\"];",
            inst.index,
            label(&inst.name),
            inst.kind.kind()
        );
    }
    for inst in &plan.instances {
        for (param, input) in &inst.inputs {
            let _ = writeln!(
                out,
                "  n{} -> n{} [label=\"{}\"];",
                input.instance,
                inst.index,
                label(&format!("{}→{param}", input.output))
            );
        }
    }
    out.push_str("}\n");
    out
}

pub fn mermaid(plan: &Plan) -> String {
    let mut out = String::from("flowchart LR\n");
    for inst in &plan.instances {
        let _ = writeln!(
            out,
            "  n{}[\"{}<br/><i>{}</i>\"]",
            inst.index,
            label(&inst.name),
            inst.kind.kind()
        );
    }
    for inst in &plan.instances {
        for (param, input) in &inst.inputs {
            let _ = writeln!(
                out,
                "  n{} -->|{}→{param}| n{}",
                input.instance, input.output, inst.index
            );
        }
    }
    out
}
