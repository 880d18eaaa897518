"""`garrison demo`: the README's main job — a console on embedded SQLite plus a sample app under the defender."""
