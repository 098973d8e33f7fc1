-- One row per audience, cohort (the day its members entered) and group: how many
-- members, how many bought within the window, their orders and revenue. `complete`:
-- the window has fully elapsed by the as-of day, so the cohort's figures are final.
SELECT audience,
       entered_on AS cohort_date,
       CAST(CASE WHEN in_holdout THEN 'control' ELSE 'treatment' END AS VARCHAR) AS "group",
       CAST(COUNT(*) AS BIGINT) AS members,
       CAST(SUM(CASE WHEN converted THEN 1 ELSE 0 END) AS BIGINT) AS converted,
       CAST(SUM(CASE WHEN converted THEN 1 ELSE 0 END) AS DOUBLE PRECISION) / COUNT(*) AS conversion_rate,
       CAST(SUM(orders) AS BIGINT) AS orders,
       CAST(SUM(revenue) AS NUMERIC(18, 2)) AS revenue,
       CAST(SUM(revenue) AS DOUBLE PRECISION) / COUNT(*) AS revenue_per_member,
       window_days,
       complete
FROM {{ measured }}
GROUP BY audience, entered_on, in_holdout, window_days, complete
