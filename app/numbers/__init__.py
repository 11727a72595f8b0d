"""Reading whole numbers (POST /read): a picture of several digits is segmented into candidate
digits, every candidate goes through the S4 net in one batched pass, and the best reading of the
number is chosen from the net's answers."""
