//! Writes: the `Edit` operations, validated before the document is touched and applied in one
//! Automerge transaction (all or nothing).

use automerge::transaction::Transactable;
use automerge::{ObjType, ScalarValue, Value as AmValue};
use concord::path::{self, DocPath, PathError};
use serde_json::Value as Json;

use crate::error::{ConcordError, Result};
use crate::value::{describe, extend, resolve};

/// One write. `DocHandle::apply` applies a list of them atomically; `put`, `delete`, ... are
/// shorthands for a single one.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Enum)]
pub enum Edit {
    /// Writes `json` at `path`: a new or existing map key, an existing list index (overwritten),
    /// or the list's length / `-` (appended). Parents must exist. At the root (`""`), `json` must
    /// be an object and replaces the document's contents. JSON strings become collaborative text.
    Put { path: String, json: String },
    /// Deletes the map key or list element at `path` (later elements shift down).
    Delete { path: String },
    /// Inserts `json` into the list at `path`, before position `index` (`index` = length appends).
    Insert {
        path: String,
        index: u64,
        json: String,
    },
    /// Replaces `delete` characters at `pos` of the text at `path` with `text` (Unicode code points).
    SpliceText {
        path: String,
        pos: u64,
        delete: u64,
        text: String,
    },
    /// Adds `by` to the counter at `path`, creating the counter when the key is absent.
    Increment { path: String, by: i64 },
}

/// An edit with its path and JSON parsed.
#[derive(Debug)]
pub(crate) enum Parsed {
    Put(DocPath, Json),
    Delete(DocPath),
    Insert(DocPath, usize, Json),
    Splice(DocPath, usize, usize, String),
    Increment(DocPath, i64),
}

pub(crate) fn parse_path(path: &str) -> Result<DocPath> {
    Ok(path.parse::<DocPath>()?)
}

fn parse_json(json: &str) -> Result<Json> {
    Ok(serde_json::from_str(json)?)
}

fn index(what: &str, n: u64) -> Result<usize> {
    usize::try_from(n)
        .map_err(|_| ConcordError::InvalidArgument(format!("{what} {n} is too large")))
}

impl Edit {
    /// Parses paths and JSON; nothing is written yet.
    pub(crate) fn parse(self) -> Result<Parsed> {
        Ok(match self {
            Edit::Put { path, json } => {
                let (path, value) = (parse_path(&path)?, parse_json(&json)?);
                if path.is_root() && !value.is_object() {
                    return Err(ConcordError::InvalidJson(
                        "the document root can only be replaced by a JSON object".to_owned(),
                    ));
                }
                Parsed::Put(path, value)
            }
            Edit::Delete { path } => Parsed::Delete(parse_path(&path)?),
            Edit::Insert {
                path,
                index: i,
                json,
            } => Parsed::Insert(parse_path(&path)?, index("index", i)?, parse_json(&json)?),
            Edit::SpliceText {
                path,
                pos,
                delete,
                text,
            } => Parsed::Splice(
                parse_path(&path)?,
                index("position", pos)?,
                index("delete count", delete)?,
                text,
            ),
            Edit::Increment { path, by } => Parsed::Increment(parse_path(&path)?, by),
        })
    }
}

/// Applies one parsed edit inside a transaction.
pub(crate) fn apply<T: Transactable>(tx: &mut T, edit: &Parsed) -> Result<()> {
    match edit {
        Parsed::Put(p, v) => path::put(tx, p, v)?,
        Parsed::Delete(p) => path::delete(tx, p)?,
        Parsed::Insert(p, i, v) => insert(tx, p, *i, v)?,
        Parsed::Splice(p, pos, del, text) => {
            path::splice_text(tx, p, *pos, *del, text).map_err(|e| match e {
                PathError::OutOfRange { .. } => ConcordError::InvalidArgument(e.to_string()),
                other => other.into(),
            })?;
        }
        Parsed::Increment(p, by) => path::increment(tx, p, *by)?,
    }
    Ok(())
}

/// Inserts `value` before `index` of the list at `list_path`. client-core's `path` module has no
/// insert, so this inserts a null placeholder and overwrites it with `path::put`.
fn insert<T: Transactable>(
    tx: &mut T,
    list_path: &DocPath,
    index: usize,
    value: &Json,
) -> Result<()> {
    let (list, len) = match resolve(&*tx, list_path)? {
        Some((AmValue::Object(ObjType::List), id)) => {
            let len = tx.length(&id);
            (id, len)
        }
        Some((v, _)) => {
            return Err(ConcordError::WrongType(format!(
                "`{list_path}` is {}, expected a list",
                describe(&v)
            )));
        }
        None => return Err(ConcordError::NotFound(format!("no list at `{list_path}`"))),
    };
    if index > len {
        return Err(ConcordError::InvalidArgument(format!(
            "index {index} is past the end of `{list_path}` (length {len})"
        )));
    }
    tx.insert(&list, index, ScalarValue::Null)?;
    path::put(tx, &extend(list_path, &index.to_string()), value)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use automerge::AutoCommit;
    use serde_json::json;

    fn run(doc: &mut AutoCommit, edit: Edit) -> Result<()> {
        apply(doc, &edit.parse()?)
    }

    fn json_at(doc: &AutoCommit, p: &str) -> Result<Option<Json>> {
        Ok(path::get(doc, &parse_path(p)?)?)
    }

    #[test]
    fn edits_apply() -> Result<()> {
        let mut d = AutoCommit::new();
        let put = |path: &str, json: &str| Edit::Put {
            path: path.into(),
            json: json.into(),
        };
        run(&mut d, put("", r#"{"items": ["a", "c"], "title": "hi"}"#))?;
        run(
            &mut d,
            Edit::Insert {
                path: "items".into(),
                index: 1,
                json: r#"{"b": 1}"#.into(),
            },
        )?;
        run(
            &mut d,
            Edit::Insert {
                path: "items".into(),
                index: 3,
                json: "\"d\"".into(),
            },
        )?;
        run(
            &mut d,
            Edit::SpliceText {
                path: "title".into(),
                pos: 2,
                delete: 0,
                text: "!".into(),
            },
        )?;
        run(
            &mut d,
            Edit::Increment {
                path: "n".into(),
                by: 2,
            },
        )?;
        run(
            &mut d,
            Edit::Delete {
                path: "items/0".into(),
            },
        )?;
        assert_eq!(
            json_at(&d, "")?,
            Some(json!({"items": [{"b": 1}, "c", "d"], "title": "hi!", "n": 2}))
        );
        Ok(())
    }

    #[test]
    fn bad_edits_map_to_kinds() -> Result<()> {
        let mut d = AutoCommit::new();
        run(
            &mut d,
            Edit::Put {
                path: "l".into(),
                json: "[]".into(),
            },
        )?;
        run(
            &mut d,
            Edit::Put {
                path: "t".into(),
                json: "\"x\"".into(),
            },
        )?;
        let cases = [
            (
                Edit::Put {
                    path: "a//b".into(),
                    json: "1".into(),
                },
                "InvalidPath",
            ),
            (
                Edit::Put {
                    path: "a".into(),
                    json: "{".into(),
                },
                "InvalidJson",
            ),
            (
                Edit::Put {
                    path: "".into(),
                    json: "[1]".into(),
                },
                "InvalidJson",
            ),
            (
                Edit::Delete {
                    path: "nope".into(),
                },
                "NotFound",
            ),
            (Edit::Delete { path: "".into() }, "InvalidPath"),
            (
                Edit::Insert {
                    path: "l".into(),
                    index: 5,
                    json: "1".into(),
                },
                "InvalidArgument",
            ),
            (
                Edit::Insert {
                    path: "t".into(),
                    index: 0,
                    json: "1".into(),
                },
                "WrongType",
            ),
            (
                Edit::Insert {
                    path: "zz".into(),
                    index: 0,
                    json: "1".into(),
                },
                "NotFound",
            ),
            (
                Edit::SpliceText {
                    path: "t".into(),
                    pos: 9,
                    delete: 0,
                    text: "".into(),
                },
                "InvalidArgument",
            ),
            (
                Edit::SpliceText {
                    path: "l".into(),
                    pos: 0,
                    delete: 0,
                    text: "".into(),
                },
                "WrongType",
            ),
            (
                Edit::Increment {
                    path: "t".into(),
                    by: 1,
                },
                "WrongType",
            ),
            (
                Edit::Increment {
                    path: "t/0".into(),
                    by: 1,
                },
                "InvalidPath",
            ),
        ];
        for (edit, kind) in cases {
            let shown = format!("{edit:?}");
            let err = run(&mut d, edit).err();
            let got = format!("{err:?}");
            assert!(got.starts_with(&format!("Some({kind}(")), "{shown}: {got}");
        }
        Ok(())
    }
}
