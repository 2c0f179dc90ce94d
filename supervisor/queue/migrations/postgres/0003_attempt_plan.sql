-- The memory plan an attempt ran (passes/memory_plan.py: the ocr pass after an oom).
ALTER TABLE {s}.attempts ADD COLUMN plan jsonb;
