-- Viewed products in the last carts.browse_lookback_days (per category:
-- carts.categories.<category>.browse_lookback_days), put nothing in the cart and
-- ordered nothing since, the last view at least carts.browse_after_hours ago. Window
-- shoppers (many sessions with views, never an order) are flagged so paid audiences
-- can leave them out.
{%- set lookbacks = {} %}
{%- for name, c in settings.carts.categories.items() if c.browse_lookback_days is not none %}
{%- set _ = lookbacks.update({name: c.browse_lookback_days}) %}
{%- endfor %}
{%- macro in_lookback() -%}
{%- if lookbacks -%}
occurred_at >= {{ now }} - INTERVAL '1 day' * CASE category
    {%- for name, days in lookbacks.items() %} WHEN {{ lit(name) }} THEN {{ days }}{% endfor %}
    ELSE {{ settings.carts.browse_lookback_days }} END
{%- else -%}
occurred_at >= {{ now }} - INTERVAL '{{ settings.carts.browse_lookback_days }} days'
{%- endif -%}
{%- endmacro %}
WITH events AS (
    SELECT e.event_type, e.product_id, e.category, e.session_id, e.occurred_at, e.visitor_id,
           COALESCE(e.customer_id, m.customer_id) AS customer_id
    FROM {{ src('events') }} e
    LEFT JOIN {{ mart('identity_map') }} m ON m.visitor_id = e.visitor_id
    WHERE e.occurred_at >= {{ now }} - INTERVAL '{{ ([settings.carts.window_shopper_days, settings.carts.browse_lookback_days] + (lookbacks.values() | list)) | max }} days'
), keyed AS (
    SELECT *, COALESCE('c:' || customer_id, 'v:' || visitor_id) AS browser_key
    FROM events
    WHERE customer_id IS NOT NULL OR visitor_id IS NOT NULL
), views AS (
    SELECT browser_key, MAX(customer_id) AS customer_id, MAX(visitor_id) AS visitor_id,
           MIN(occurred_at) AS first_view_at, MAX(occurred_at) AS last_view_at,
           COUNT(DISTINCT product_id) AS products_viewed
    FROM keyed
    WHERE event_type = 'product_view' AND product_id IS NOT NULL
      AND {{ in_lookback() }}
    GROUP BY browser_key
), top_products AS (
    SELECT browser_key, string_agg(product_id, ',' ORDER BY views DESC, product_id) AS product_ids
    FROM (
        SELECT browser_key, product_id, COUNT(*) AS views,
               ROW_NUMBER() OVER (PARTITION BY browser_key ORDER BY COUNT(*) DESC, product_id) AS place
        FROM keyed
        WHERE event_type = 'product_view' AND product_id IS NOT NULL
          AND {{ in_lookback() }}
        GROUP BY browser_key, product_id
    ) counted
    WHERE place <= 10
    GROUP BY browser_key
), shopping_sessions AS (
    SELECT browser_key, COUNT(DISTINCT session_id) AS sessions
    FROM keyed
    WHERE event_type = 'product_view'
      AND occurred_at >= {{ now }} - INTERVAL '{{ settings.carts.window_shopper_days }} days'
    GROUP BY browser_key
), orders AS (
    -- keyed like browsers: a customer's orders, and orders placed from a visitor's browser
    SELECT 'c:' || customer_id AS browser_key, created_at FROM {{ src('orders') }} orders
    UNION ALL
    SELECT 'v:' || visitor_id, created_at FROM {{ src('orders') }} orders WHERE visitor_id IS NOT NULL
)
SELECT v.browser_key,
       v.customer_id,
       v.visitor_id,
       CAST(v.products_viewed AS BIGINT) AS products_viewed,
       t.product_ids,
       v.first_view_at,
       v.last_view_at,
       COALESCE(s.sessions >= {{ settings.carts.window_shopper_min_sessions }}, FALSE)
         AND NOT EXISTS (SELECT 1 FROM orders o WHERE o.browser_key = v.browser_key)
         AS is_window_shopper
FROM views v
LEFT JOIN top_products t ON t.browser_key = v.browser_key
LEFT JOIN shopping_sessions s ON s.browser_key = v.browser_key
WHERE v.last_view_at <= {{ now }} - INTERVAL '{{ (settings.carts.browse_after_hours * 60) | round | int }} minutes'
  AND NOT EXISTS (SELECT 1 FROM keyed a
                  WHERE a.browser_key = v.browser_key AND a.event_type = 'add_to_cart' AND a.occurred_at >= v.first_view_at)
  AND NOT EXISTS (SELECT 1 FROM orders o WHERE o.browser_key = v.browser_key AND o.created_at >= v.first_view_at)
