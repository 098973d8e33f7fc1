-- Why customers leave: the last reason each customer stated (contact_outcomes) within
-- segments.churn_reasons.period_days, counted per main category and lifecycle stage (the
-- stage of this build), with its share among the customers of that category and stage
-- who stated a reason. Customers without a row in customer_segments (no order) are left out.
WITH stated AS (
    SELECT customer_id, {{ latest('reason', 'contacted_at', 'contact_id') }} AS reason
    FROM {{ src('contact_outcomes') }} c
    WHERE reason IS NOT NULL
      AND contacted_at >= {{ now }} - {{ settings.churn_reasons.period_days }} * INTERVAL '1 day'
    GROUP BY customer_id
), counted AS (
    SELECT s.main_category, s.lifecycle_stage, r.reason, COUNT(*) AS customers
    FROM stated r
    JOIN {{ mart('customer_segments') }} s ON s.customer_id = r.customer_id
    GROUP BY s.main_category, s.lifecycle_stage, r.reason
)
SELECT main_category, lifecycle_stage, reason, customers,
       CAST(customers AS DOUBLE PRECISION)
         / CAST(SUM(customers) OVER (PARTITION BY main_category, lifecycle_stage) AS DOUBLE PRECISION) AS share
FROM counted
