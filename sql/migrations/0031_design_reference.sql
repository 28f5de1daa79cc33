-- 0031: a column comment named DESIGN.md, which a clone of the repository does not contain; the design now
-- travels with the code as docs/ARCHITECTURE.md.
COMMENT ON COLUMN drumbeat.enrollments.step_done_at IS 'The "done" instant of the scheduling calculus (docs/ARCHITECTURE.md): when the previous step was done (the start, before the first step).';
