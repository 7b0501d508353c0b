"""Jobs made of exsnn's steps, run start to finish (the main job: photodynamics)."""
