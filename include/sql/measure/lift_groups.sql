-- What campaign_lift's statistics need, per audience and group over its complete
-- cohorts: members, converted members, and revenue's sum and sum of squares (Welch's
-- variance without a row per member).
SELECT audience, in_holdout,
       SUM(members) AS members,
       SUM(converted) AS converted,
       SUM(CAST(revenue AS DOUBLE PRECISION)) AS revenue,
       SUM(revenue_squares) AS revenue_squares,
       COUNT(*) AS cohorts
FROM {{ measured }}
WHERE complete
GROUP BY audience, in_holdout
