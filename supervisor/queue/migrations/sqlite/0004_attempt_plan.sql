-- The memory plan an attempt ran (passes/memory_plan.py: the ocr pass after an oom), as JSON.
ALTER TABLE attempts ADD COLUMN plan TEXT;
