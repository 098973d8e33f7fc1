-- What campaign_lift's statistics need, per audience and group over its complete
-- cohorts: members, converted members, and revenue's sum and sum of squares (Welch's
-- variance without reading a row per member into Python).
SELECT audience, in_holdout,
       COUNT(*) AS members,
       SUM(CASE WHEN converted THEN 1 ELSE 0 END) AS converted,
       SUM(CAST(revenue AS DOUBLE PRECISION)) AS revenue,
       SUM(CAST(revenue AS DOUBLE PRECISION) * CAST(revenue AS DOUBLE PRECISION)) AS revenue_squares,
       COUNT(DISTINCT entered_on) AS cohorts
FROM {{ measured }}
WHERE complete
GROUP BY audience, in_holdout
