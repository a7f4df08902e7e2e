//! Feeds arbitrary bytes to the pipeline-as-code front end: YAML parsing, decoding, CEL
//! compilation, templates, cross-stage validation and planning. Any panic, stack overflow,
//! timeout or runaway allocation is a bug: a pipeline file comes from a repository and must
//! only ever produce a plan or a report.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match gantry::pipeline::load("fuzz.yaml", text) {
        Ok(plan) => {
            // Touch the plan the way the scheduler does.
            for planned in &plan.stages {
                let _ = plan.stage(planned);
                let _ = plan.when(planned);
            }
        }
        Err(report) => {
            // Exercise the `FILE:LINE:COL: message` rendering.
            let rendered = report.to_string();
            std::hint::black_box(rendered);
        }
    }
});
