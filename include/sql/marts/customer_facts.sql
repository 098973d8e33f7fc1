-- One row per customer with at least one order (any status): what they bought, when,
-- how regularly, and what they did since. Purchases are orders whose status is in
-- segments.purchase_statuses; a purchase day is a distinct day with a purchase.
-- A purchase is late when delivered more than segments.delivery.promised_days after the
-- order (per category: the longest promise among the order's items).
WITH orders_seen AS (
    -- orders read once: purchases, statuses, promo codes and deliveries
    SELECT o.order_id, o.customer_id, o.created_at, o.status, o.total_amount, o.promo_code, o.delivered_at,
           o.status IN {{ purchase_statuses }} AS is_purchase,
           o.delivered_at IS NOT NULL AND o.status IN {{ purchase_statuses }} AS is_delivered,
           {{ hours_between('o.delivered_at', 'o.created_at') }} / 24.0 AS delivery_days,
           {{ hours_between('o.delivered_at', 'o.created_at') }}
             > {% if settings.delivery.categories %}COALESCE(p.promised_days, {{ settings.delivery.promised_days }}){% else %}{{ settings.delivery.promised_days }}{% endif %} * 24 AS is_late
    FROM {{ src('orders') }} o
    {%- if settings.delivery.categories %}
    LEFT JOIN (
        -- an order is promised the longest of its items' categories (items are read
        -- only when some category has a promise of its own)
        SELECT i.order_id, MAX(CASE i.category
                {%- for category, days in settings.delivery.categories.items() %}
                WHEN {{ lit(category) }} THEN {{ days }}
                {%- endfor %}
                ELSE {{ settings.delivery.promised_days }} END) AS promised_days
        FROM {{ src('order_items') }} i
        GROUP BY i.order_id
    ) p ON p.order_id = o.order_id
    {%- endif %}
), numbered AS (
    SELECT customer_id, day, amount, orders, gap, nth FROM {{ mart('customer_purchase_days') }}
), rhythm AS (
    SELECT customer_id,
           MIN(day) AS first_purchase_day,
           MAX(day) AS last_purchase_day,
           COUNT(*) AS purchase_days,
           SUM(orders) AS orders,
           SUM(amount) AS revenue,
           AVG(gap) AS mean_gap_days,
           percentile_cont(0.5) WITHIN GROUP (ORDER BY gap) AS median_gap_days,
           AVG(CASE WHEN nth > 1 THEN amount END) AS repeat_day_value
    FROM numbered
    GROUP BY customer_id
), all_orders AS (
    SELECT customer_id,
           MIN(created_at) FILTER (WHERE is_purchase) AS first_order_at,
           MAX(created_at) FILTER (WHERE is_purchase) AS last_order_at,
           MAX(created_at) AS last_any_order_at,
           {{ latest('status', 'created_at', 'order_id') }} AS last_order_status,
           COUNT(*) FILTER (WHERE status = 'cancelled') AS cancelled_orders,
           COUNT(*) FILTER (WHERE status = 'returned') AS returned_orders,
           COUNT(*) FILTER (WHERE is_purchase AND promo_code IS NOT NULL AND promo_code <> '') AS promo_orders,
           COUNT(*) FILTER (WHERE is_delivered AND is_late) AS late_deliveries,
           MAX(delivered_at) FILTER (WHERE is_delivered AND is_late) AS last_late_delivery_at,
           {{ latest('delivery_days', 'delivered_at', 'order_id', where='is_delivered') }} AS last_delivery_days
    FROM orders_seen
    GROUP BY customer_id
), category_days AS (
    SELECT customer_id, category, COUNT(*) AS days, SUM(spent) AS spent
    FROM {{ mart('customer_category_days') }}
    GROUP BY customer_id, category
), categories AS (
    SELECT customer_id,
           MAX(CASE WHEN place = 1 THEN category END) AS main_category,
           -- three plain MAXes and concat_ws (which skips NULLs): an ordered
           -- string_agg cost 3 s at a million customers
           concat_ws(',', MAX(CASE WHEN place = 1 THEN category END), MAX(CASE WHEN place = 2 THEN category END),
                     MAX(CASE WHEN place = 3 THEN category END)) AS top_categories
    FROM (
        SELECT customer_id, category,
               ROW_NUMBER() OVER (PARTITION BY customer_id ORDER BY days DESC, spent DESC, category) AS place
        FROM category_days
    ) ranked
    WHERE place <= 3
    GROUP BY customer_id
), feedback AS (
    -- the lowest of the last feedback's scores is what the negative rule reads
    SELECT customer_id, {{ latest('score', 'created_at', 'order_id') }} AS last_feedback_score,
           {{ latest('LEAST(score, COALESCE(service_score, score), COALESCE(delivery_score, score), COALESCE(product_score, score))', 'created_at', 'order_id') }} AS last_feedback_lowest_score,
           MAX(created_at) AS last_feedback_at
    FROM (
        SELECT COALESCE(f.customer_id, o.customer_id) AS customer_id, f.order_id, f.score, f.created_at,
               f.service_score, f.delivery_score, f.product_score
        FROM {{ src('feedback') }} f
        LEFT JOIN orders_seen o ON o.order_id = f.order_id
    ) f
    WHERE customer_id IS NOT NULL
    GROUP BY customer_id
), visitor_visits AS (
    SELECT customer_id, visitor_id, last_seen_at AS last_visit_at FROM {{ mart('visitor_activity') }}
), recent_visits AS (
    SELECT customer_id, visitor_id, session_id,
           COUNT(*) FILTER (WHERE event_type = 'add_to_cart') AS cart_adds
    FROM {{ src('events') }} e
    WHERE occurred_at >= {{ recent_since }}
    GROUP BY customer_id, visitor_id, session_id
), visits AS (
    SELECT COALESCE(g.customer_id, m.customer_id) AS customer_id, MAX(g.last_visit_at) AS last_visit_at
    FROM visitor_visits g
    LEFT JOIN {{ mart('identity_map') }} m ON m.visitor_id = g.visitor_id
    WHERE COALESCE(g.customer_id, m.customer_id) IS NOT NULL
    GROUP BY COALESCE(g.customer_id, m.customer_id)
), recent AS (
    SELECT COALESCE(g.customer_id, m.customer_id) AS customer_id,
           COUNT(DISTINCT g.session_id) AS recent_sessions,
           SUM(g.cart_adds) AS recent_cart_adds
    FROM recent_visits g
    LEFT JOIN {{ mart('identity_map') }} m ON m.visitor_id = g.visitor_id
    WHERE COALESCE(g.customer_id, m.customer_id) IS NOT NULL
    GROUP BY COALESCE(g.customer_id, m.customer_id)
), engaged AS (
    SELECT customer_id,
           MAX(occurred_at) FILTER (WHERE event_type IN ('open', 'click')) AS last_engaged_at,
           MAX(occurred_at) FILTER (WHERE event_type = 'unsubscribe') AS mailing_unsubscribed_at,
           MAX(occurred_at) FILTER (WHERE event_type = 'complaint') AS last_complaint_at
    FROM {{ src('mailing_events') }} mailing_events
    GROUP BY customer_id
), ignored AS (
    -- mailings sent since the last open or click (all of them when never engaged)
    SELECT s.customer_id, COUNT(DISTINCT s.campaign_id) AS mailings_since_engagement
    FROM {{ src('mailing_events') }} s
    LEFT JOIN engaged g ON g.customer_id = s.customer_id
    WHERE s.event_type = 'sent' AND (g.last_engaged_at IS NULL OR s.occurred_at > g.last_engaged_at)
    GROUP BY s.customer_id
)
SELECT a.customer_id,
       a.first_order_at,
       a.last_order_at,
       r.first_purchase_day,
       r.last_purchase_day,
       a.last_any_order_at,
       a.last_order_status,
       CAST(COALESCE(r.orders, 0) AS BIGINT) AS orders,
       CAST(COALESCE(r.purchase_days, 0) AS BIGINT) AS purchase_days,
       CAST(COALESCE(r.revenue, 0) AS NUMERIC(18, 2)) AS revenue,
       CAST(r.revenue / r.orders AS NUMERIC(18, 2)) AS avg_order_value,
       CAST(r.repeat_day_value AS NUMERIC(18, 2)) AS repeat_day_value,
       CAST(r.mean_gap_days AS DOUBLE PRECISION) AS mean_gap_days,
       CAST(r.median_gap_days AS DOUBLE PRECISION) AS median_gap_days,
       c.main_category,
       c.top_categories,
       CAST(a.cancelled_orders AS BIGINT) AS cancelled_orders,
       CAST(a.returned_orders AS BIGINT) AS returned_orders,
       CAST(f.last_feedback_score AS BIGINT) AS last_feedback_score,
       CAST(f.last_feedback_lowest_score AS BIGINT) AS last_feedback_lowest_score,
       f.last_feedback_at,
       v.last_visit_at,
       CAST(COALESCE(rv.recent_sessions, 0) AS BIGINT) AS recent_sessions,
       CAST(COALESCE(rv.recent_cart_adds, 0) AS BIGINT) AS recent_cart_adds,
       g.last_engaged_at,
       g.mailing_unsubscribed_at,
       g.last_complaint_at,
       CAST(COALESCE(i.mailings_since_engagement, 0) AS BIGINT) AS mailings_since_engagement,
       -- share of purchases (orders) that used a promo code: discount dependence
       CAST(a.promo_orders AS DOUBLE PRECISION) / NULLIF(r.orders, 0) AS promo_order_share,
       CAST(COALESCE(a.late_deliveries, 0) AS BIGINT) AS late_deliveries,
       a.last_late_delivery_at,
       CAST(a.last_delivery_days AS DOUBLE PRECISION) AS last_delivery_days
FROM all_orders a
LEFT JOIN rhythm r ON r.customer_id = a.customer_id
LEFT JOIN categories c ON c.customer_id = a.customer_id
LEFT JOIN feedback f ON f.customer_id = a.customer_id
LEFT JOIN visits v ON v.customer_id = a.customer_id
LEFT JOIN recent rv ON rv.customer_id = a.customer_id
LEFT JOIN engaged g ON g.customer_id = a.customer_id
LEFT JOIN ignored i ON i.customer_id = a.customer_id
