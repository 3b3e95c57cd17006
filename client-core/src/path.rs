//! Paths into a document (`todos/0/title`) and JSON reads and writes at them.
//! (Being written; see the module docs once complete.)
