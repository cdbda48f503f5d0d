"""Ranking: fitted evidence per data cut, baselines, SASRec, retrieval, features, fusion, recommender, catalogue evaluation."""
