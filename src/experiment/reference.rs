//! References to other steps' outputs: `step`, `step.output`, `step[k=v,...]`, `step[k=v].output`.

use std::fmt;

/// A parsed reference string. The filter keeps only the upstream instances whose grid
/// coordinates have the given values.
#[derive(Debug, Clone, PartialEq)]
pub struct Reference {
    pub step: String,
    pub filter: Vec<(String, String)>,
    pub output: Option<String>,
}

/// Ids of steps and outputs: letters, digits, `_` and `-` (the reference syntax uses `.` and `[`).
pub fn is_identifier(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

impl Reference {
    pub fn parse(text: &str) -> Result<Reference, String> {
        let text = text.trim();
        let (head, output) = match text.rfind(']') {
            Some(close) => {
                let rest = &text[close + 1..];
                let output = match rest.strip_prefix('.') {
                    Some(o) => Some(o.to_string()),
                    None if rest.is_empty() => None,
                    None => return Err(format!("unexpected `{rest}` after `]`")),
                };
                (&text[..=close], output)
            }
            None => match text.split_once('.') {
                Some((s, o)) => (s, Some(o.to_string())),
                None => (text, None),
            },
        };
        let (step, filter) = match head.split_once('[') {
            Some((step, rest)) => {
                let inner = rest
                    .strip_suffix(']')
                    .ok_or_else(|| "a `[` without its closing `]`".to_string())?;
                let mut filter = Vec::new();
                for pair in inner.split(',').filter(|p| !p.trim().is_empty()) {
                    let (k, v) = pair
                        .split_once('=')
                        .ok_or_else(|| format!("filter `{pair}` is not of the form key=value"))?;
                    filter.push((k.trim().to_string(), v.trim().to_string()));
                }
                if filter.is_empty() {
                    return Err("an empty filter `[]`".into());
                }
                (step, filter)
            }
            None => (head, Vec::new()),
        };
        if !is_identifier(step) {
            return Err(format!("`{step}` is not a step id"));
        }
        if let Some(o) = &output {
            if !is_identifier(o) {
                return Err(format!("`{o}` is not an output name"));
            }
        }
        Ok(Reference {
            step: step.to_string(),
            filter,
            output,
        })
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.step)?;
        if !self.filter.is_empty() {
            let parts: Vec<String> = self
                .filter
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            write!(f, "[{}]", parts.join(","))?;
        }
        if let Some(o) = &self.output {
            write!(f, ".{o}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_form() {
        let r = Reference::parse("data").unwrap();
        assert_eq!((r.step.as_str(), r.output), ("data", None));
        let r = Reference::parse("data.train").unwrap();
        assert_eq!(r.output.as_deref(), Some("train"));
        let r = Reference::parse("sae[arch=topk,k=32].model").unwrap();
        assert_eq!(r.step, "sae");
        assert_eq!(r.filter.len(), 2);
        assert_eq!(r.output.as_deref(), Some("model"));
        assert_eq!(r.to_string(), "sae[arch=topk,k=32].model");
        let r = Reference::parse("sae[lr=0.001]").unwrap();
        assert_eq!(r.filter[0].1, "0.001");
    }

    #[test]
    fn rejects_malformed_references() {
        assert!(Reference::parse("sae[arch]").is_err());
        assert!(Reference::parse("sae[arch=topk").is_err());
        assert!(Reference::parse("a b").is_err());
        assert!(Reference::parse("sae[]").is_err());
    }
}
