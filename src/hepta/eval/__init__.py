"""`hepta eval`: a trained model measured on the held-out digits (recognise, draw, edit) and on
the text corpus's validation split, through hepta's own inference engine."""
