//! `${{ ... }}` interpolation in image references and other stage fields.
//!
//! Templates are parsed once when the pipeline is decoded, so a typo in a reference is a
//! validation error rather than a surprise at run time. They are deliberately never applied to
//! `run:` scripts: event data (branch names, pull-request titles) reaches steps only as
//! environment variables, so it cannot inject shell.

use std::fmt;

use super::model::Spanned;

#[derive(Clone, Debug, PartialEq)]
pub struct Template {
    pub raw: Spanned<String>,
    pub parts: Vec<Part>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Part {
    Text(String),
    Ref(Reference),
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Reference {
    Param(String),
    Git(GitField),
    Run(RunField),
    Stage { name: String, field: StageField },
    Matrix(String),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum GitField {
    Sha,
    ShortSha,
    Branch,
    Tag,
    Ref,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum RunField {
    Number,
    Id,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum StageField {
    /// The pushed image reference, pinned by digest (`registry/repo@sha256:...`).
    Image,
    Digest,
}

const GIT_FIELDS: [(&str, GitField); 5] = [
    ("sha", GitField::Sha),
    ("short_sha", GitField::ShortSha),
    ("branch", GitField::Branch),
    ("tag", GitField::Tag),
    ("ref", GitField::Ref),
];
const RUN_FIELDS: [(&str, RunField); 2] = [("number", RunField::Number), ("id", RunField::Id)];
const STAGE_FIELDS: [(&str, StageField); 2] =
    [("image", StageField::Image), ("digest", StageField::Digest)];
const ROOTS: [&str; 5] = ["params", "git", "run", "stages", "matrix"];

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fn name<T: PartialEq + Copy>(table: &[(&'static str, T)], v: T) -> &'static str {
            table.iter().find(|(_, x)| *x == v).map_or("?", |(n, _)| *n)
        }
        match self {
            Reference::Param(p) => write!(f, "params.{p}"),
            Reference::Git(g) => write!(f, "git.{}", name(&GIT_FIELDS, *g)),
            Reference::Run(r) => write!(f, "run.{}", name(&RUN_FIELDS, *r)),
            Reference::Stage { name: s, field } => {
                write!(f, "stages.{s}.{}", name(&STAGE_FIELDS, *field))
            }
            Reference::Matrix(m) => write!(f, "matrix.{m}"),
        }
    }
}

impl Template {
    /// A template with no references.
    pub fn literal(raw: Spanned<String>) -> Self {
        let parts = vec![Part::Text(raw.value.clone())];
        Template { raw, parts }
    }

    pub fn parse(raw: Spanned<String>) -> Result<Self, String> {
        let mut parts = Vec::new();
        let mut rest = raw.value.as_str();
        while let Some(start) = rest.find("${{") {
            if start > 0 {
                parts.push(Part::Text(rest[..start].to_owned()));
            }
            let after = &rest[start + 3..];
            let end = after
                .find("}}")
                .ok_or_else(|| "`${{` without a closing `}}`".to_owned())?;
            parts.push(Part::Ref(parse_reference(after[..end].trim())?));
            rest = &after[end + 2..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_owned()));
        }
        Ok(Template { raw, parts })
    }

    pub fn references(&self) -> impl Iterator<Item = &Reference> {
        self.parts.iter().filter_map(|p| match p {
            Part::Ref(r) => Some(r),
            Part::Text(_) => None,
        })
    }

    pub fn is_literal(&self) -> bool {
        self.references().next().is_none()
    }

    /// Substitutes every reference via `lookup`; the first one it cannot resolve is the error.
    pub fn render(
        &self,
        lookup: impl Fn(&Reference) -> Option<String>,
    ) -> Result<String, Reference> {
        let mut out = String::with_capacity(self.raw.value.len());
        for part in &self.parts {
            match part {
                Part::Text(t) => out.push_str(t),
                Part::Ref(r) => out.push_str(&lookup(r).ok_or_else(|| r.clone())?),
            }
        }
        Ok(out)
    }
}

fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

fn field<T: Copy>(table: &[(&'static str, T)], root: &str, name: &str) -> Result<T, String> {
    table
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, v)| *v)
        .ok_or_else(|| {
            let known: Vec<&str> = table.iter().map(|(n, _)| *n).collect();
            let hint = super::diagnostic::suggestion(name, known.iter().copied())
                .map(|s| format!("; did you mean `{root}.{s}`?"))
                .unwrap_or_else(|| format!(" (known: {})", known.join(", ")));
            format!("unknown field `{root}.{name}` in `${{{{ }}}}`{hint}")
        })
}

fn parse_reference(expr: &str) -> Result<Reference, String> {
    if expr.is_empty() {
        return Err("empty `${{ }}`".into());
    }
    let segments: Vec<&str> = expr.split('.').map(str::trim).collect();
    if let Some(bad) = segments.iter().find(|s| !is_identifier(s)) {
        return Err(format!(
            "`${{{{ {expr} }}}}` is not a reference: `{bad}` is not a name \
             (only dotted names such as `params.version` or `git.sha` are allowed)"
        ));
    }
    let want = |n: usize, shape: &str| -> Result<(), String> {
        if segments.len() == n {
            Ok(())
        } else {
            Err(format!(
                "`${{{{ {expr} }}}}` should have the form `{shape}`"
            ))
        }
    };
    match segments[0] {
        "params" => {
            want(2, "params.NAME")?;
            Ok(Reference::Param(segments[1].to_owned()))
        }
        "matrix" => {
            want(2, "matrix.AXIS")?;
            Ok(Reference::Matrix(segments[1].to_owned()))
        }
        "git" => {
            want(2, "git.FIELD")?;
            Ok(Reference::Git(field(&GIT_FIELDS, "git", segments[1])?))
        }
        "run" => {
            want(2, "run.FIELD")?;
            Ok(Reference::Run(field(&RUN_FIELDS, "run", segments[1])?))
        }
        "stages" => {
            // Stage names may contain dots (`build.linux`): the field is the last segment.
            if segments.len() < 3 {
                want(3, "stages.NAME.image")?;
            }
            let name = segments[1..segments.len() - 1].join(".");
            let last = segments[segments.len() - 1];
            Ok(Reference::Stage {
                field: field(&STAGE_FIELDS, &format!("stages.{name}"), last)?,
                name,
            })
        }
        other => {
            let hint = super::diagnostic::suggestion(other, ROOTS)
                .map(|s| format!("; did you mean `{s}`?"))
                .unwrap_or_else(|| format!(" (known: {})", ROOTS.join(", ")));
            Err(format!(
                "unknown name `{other}` in `${{{{ {expr} }}}}`{hint}"
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::yaml::Pos;

    fn parse(s: &str) -> Result<Template, String> {
        Template::parse(Spanned::new(s.to_owned(), Pos::new(1, 1)))
    }

    #[test]
    fn parses_text_and_references() {
        let t = parse("reg/app:${{ git.short_sha }}-${{params.flavour}}").expect("valid");
        assert_eq!(
            t.parts,
            vec![
                Part::Text("reg/app:".into()),
                Part::Ref(Reference::Git(GitField::ShortSha)),
                Part::Text("-".into()),
                Part::Ref(Reference::Param("flavour".into())),
            ]
        );
        let rendered = t
            .render(|r| match r {
                Reference::Git(GitField::ShortSha) => Some("abc1234".into()),
                Reference::Param(p) if p == "flavour" => Some("slim".into()),
                _ => None,
            })
            .expect("renders");
        assert_eq!(rendered, "reg/app:abc1234-slim");
    }

    #[test]
    fn stage_image_reference() {
        let t = parse("${{ stages.package.image }}").expect("valid");
        assert_eq!(
            t.references().collect::<Vec<_>>(),
            vec![&Reference::Stage {
                name: "package".into(),
                field: StageField::Image
            }]
        );
    }

    #[test]
    fn stage_names_may_contain_dots() {
        let t = parse("${{ stages.build.linux.digest }}").expect("valid");
        assert_eq!(
            t.references().collect::<Vec<_>>(),
            vec![&Reference::Stage {
                name: "build.linux".into(),
                field: StageField::Digest
            }]
        );
    }

    #[test]
    fn errors_explain_themselves() {
        assert!(
            parse("${{ git.sah }}")
                .unwrap_err()
                .contains("did you mean `git.sha`")
        );
        assert!(
            parse("${{ parms.x }}")
                .unwrap_err()
                .contains("did you mean `params`")
        );
        assert!(
            parse("x ${{ git.sha")
                .unwrap_err()
                .contains("without a closing")
        );
        assert!(
            parse("${{ params.x || 'y' }}")
                .unwrap_err()
                .contains("not a reference")
        );
        assert!(
            parse("${{ stages.build }}")
                .unwrap_err()
                .contains("stages.NAME.image")
        );
    }

    #[test]
    fn missing_values_are_reported_by_reference() {
        let t = parse("${{ params.missing }}").expect("valid");
        assert_eq!(t.render(|_| None), Err(Reference::Param("missing".into())));
    }
}
