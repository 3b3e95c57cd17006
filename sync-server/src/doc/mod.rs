//! `concord doc ...`: a client CLI with its own local replica. (Being written.)
