"""Lightning DataModules for the CS224N GPT-2 tasks, usable without `ptl_gpt2`."""
