//! What an experiment shows: result tables, the instance graph, figures and the report page
//! (`results/<experiment>/index.html`, rewritten during a run by [`live::LiveReport`]).

pub mod dag;
pub mod explorer;
pub mod figures;
pub mod freshness;
pub mod graph;
pub mod html;
pub mod live;
pub mod outputs;
pub mod page;
pub mod state;
pub mod table;
