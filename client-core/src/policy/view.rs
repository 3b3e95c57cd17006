//! Reads of a document as it is now or as it was at some heads, with path lookup.
//!
//! Intermediate segments of a path follow Automerge's pick (`get`); only the value at the path
//! itself is merged by its policy.

use automerge::{
    Automerge, AutomergeError, ChangeHash, ObjId, ObjType, Prop, ROOT, ReadDoc, ScalarValue, Value,
};
use serde_json::Value as Json;

use crate::path::{DocPath, PathError};

/// A document (or an open transaction), now (`heads: None`) or at `heads`.
#[derive(Debug)]
pub(crate) struct View<'a, R: ReadDoc + ?Sized = Automerge> {
    pub(crate) doc: &'a R,
    pub(crate) heads: Option<&'a [ChangeHash]>,
}

impl<R: ReadDoc + ?Sized> Clone for View<'_, R> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<R: ReadDoc + ?Sized> Copy for View<'_, R> {}

/// Where a path points.
#[derive(Debug, Clone)]
pub(crate) enum Slot {
    /// The document root.
    Root,
    /// A key or index of a container (the value may be absent).
    At { parent: ObjId, prop: Prop },
    /// A parent along the path is missing.
    Missing,
}

impl<'a, R: ReadDoc + ?Sized> View<'a, R> {
    pub(crate) fn now(doc: &'a R) -> Self {
        Self { doc, heads: None }
    }

    pub(crate) fn at(doc: &'a R, heads: &'a [ChangeHash]) -> Self {
        Self {
            doc,
            heads: Some(heads),
        }
    }

    pub(crate) fn get(
        &self,
        obj: &ObjId,
        prop: Prop,
    ) -> Result<Option<(Value<'a>, ObjId)>, AutomergeError> {
        match self.heads {
            None => self.doc.get(obj, prop),
            Some(h) => self.doc.get_at(obj, prop, h),
        }
    }

    pub(crate) fn get_all(
        &self,
        obj: &ObjId,
        prop: Prop,
    ) -> Result<Vec<(Value<'a>, ObjId)>, AutomergeError> {
        match self.heads {
            None => self.doc.get_all(obj, prop),
            Some(h) => self.doc.get_all_at(obj, prop, h),
        }
    }

    pub(crate) fn keys(&self, obj: &ObjId) -> Vec<String> {
        match self.heads {
            None => self.doc.keys(obj).collect(),
            Some(h) => self.doc.keys_at(obj, h).collect(),
        }
    }

    pub(crate) fn length(&self, obj: &ObjId) -> usize {
        match self.heads {
            None => self.doc.length(obj),
            Some(h) => self.doc.length_at(obj, h),
        }
    }

    pub(crate) fn text(&self, obj: &ObjId) -> Result<String, AutomergeError> {
        match self.heads {
            None => self.doc.text(obj),
            Some(h) => self.doc.text_at(obj, h),
        }
    }

    /// The children of a container: `(segment, prop)` for every key or index.
    pub(crate) fn children(&self, obj: &ObjId, otype: ObjType) -> Vec<(String, Prop)> {
        match otype {
            ObjType::Map | ObjType::Table => self
                .keys(obj)
                .into_iter()
                .map(|k| (k.clone(), Prop::Map(k)))
                .collect(),
            ObjType::List => (0..self.length(obj))
                .map(|i| (i.to_string(), Prop::Seq(i)))
                .collect(),
            ObjType::Text => Vec::new(),
        }
    }

    /// The prop segment `i` of `path` names inside a container of type `otype`.
    fn prop(
        &self,
        obj: &ObjId,
        otype: ObjType,
        path: &DocPath,
        i: usize,
    ) -> Result<Option<Prop>, PathError> {
        let segment = &path.segments()[i];
        let at = || DocPath::from_segments(path.segments().iter().take(i).cloned()).to_string();
        match otype {
            ObjType::Map | ObjType::Table => Ok(Some(Prop::Map(segment.clone()))),
            ObjType::List => {
                if !segment.bytes().all(|b| b.is_ascii_digit()) || segment.is_empty() {
                    return Err(PathError::NotAnIndex {
                        at: at(),
                        segment: segment.clone(),
                    });
                }
                match segment.parse::<usize>() {
                    Ok(index) if index < self.length(obj) => Ok(Some(Prop::Seq(index))),
                    _ => Ok(None),
                }
            }
            ObjType::Text => Err(PathError::NotAContainer {
                at: at(),
                found: "text".to_owned(),
            }),
        }
    }

    /// Locates `path`: its parent container and the prop inside it.
    pub(crate) fn slot(&self, path: &DocPath) -> Result<Slot, PathError> {
        let n = path.segments().len();
        if n == 0 {
            return Ok(Slot::Root);
        }
        let (mut obj, mut otype) = (ROOT, ObjType::Map);
        for i in 0..n - 1 {
            let Some(prop) = self.prop(&obj, otype, path, i)? else {
                return Ok(Slot::Missing);
            };
            match self.get(&obj, prop)? {
                Some((Value::Object(t), id)) => {
                    obj = id;
                    otype = t;
                }
                Some((v, _)) => {
                    return Err(PathError::NotAContainer {
                        at: DocPath::from_segments(path.segments().iter().take(i + 1).cloned())
                            .to_string(),
                        found: describe(&v),
                    });
                }
                None => return Ok(Slot::Missing),
            }
        }
        match self.prop(&obj, otype, path, n - 1)? {
            Some(prop) => Ok(Slot::At { parent: obj, prop }),
            None => Ok(Slot::Missing),
        }
    }

    /// Every concurrent value at `path` (empty when absent; the root is one map).
    pub(crate) fn values_at(&self, path: &DocPath) -> Result<Vec<(Value<'a>, ObjId)>, PathError> {
        Ok(match self.slot(path)? {
            Slot::Root => vec![(Value::Object(ObjType::Map), ROOT)],
            Slot::At { parent, prop } => self.get_all(&parent, prop)?,
            Slot::Missing => Vec::new(),
        })
    }

    /// A value as plain JSON (the way automerge-repo clients see it).
    pub(crate) fn json(&self, value: &Value<'_>, id: &ObjId) -> Result<Json, AutomergeError> {
        Ok(match value {
            Value::Object(ObjType::Map | ObjType::Table) => {
                let mut map = serde_json::Map::new();
                for key in self.keys(id) {
                    if let Some((v, child)) = self.get(id, Prop::Map(key.clone()))? {
                        map.insert(key, self.json(&v, &child)?);
                    }
                }
                Json::Object(map)
            }
            Value::Object(ObjType::List) => {
                let mut items = Vec::new();
                for i in 0..self.length(id) {
                    if let Some((v, child)) = self.get(id, Prop::Seq(i))? {
                        items.push(self.json(&v, &child)?);
                    }
                }
                Json::Array(items)
            }
            Value::Object(ObjType::Text) => Json::String(self.text(id)?),
            Value::Scalar(s) => scalar_json(s),
        })
    }
}

/// A scalar as JSON (counters as their value, timestamps as numbers, bytes as arrays).
pub(crate) fn scalar_json(s: &ScalarValue) -> Json {
    serde_json::to_value(s).unwrap_or(Json::Null)
}

pub(crate) use crate::path::describe;
