//! The request path's core, in process and free of wire formats: the engine that decides
//! (`engine`), the decision cache in front of it (`cache`), the bounds a request is held to
//! before anything else (`limits`) and the context each action declares (`context_shape`).

pub mod cache;
pub mod context_shape;
pub mod engine;
pub mod limits;
